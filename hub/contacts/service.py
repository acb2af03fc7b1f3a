"""Rosters: import, list, delete, and the phones a send's tags or contact ids name."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import msgspec

from hub.contacts import repository as sql
from hub.contacts.rosters import Row, parse_date, read_roster
from hub.contacts.schemas import Contact, ContactPage, ImportResult, RowProblem
from hub.errors import NotFound
from hub.messages.numbers import Rejected, normalize
from hub.settings import ContactsSettings
from tenants.repository import TenantRow


def _check(row: Row) -> tuple[list[Any], None] | tuple[None, str]:
    """The row as columns to store, or why it cannot be stored."""
    if row.problem:
        return None, row.problem
    if not row.name:
        return None, "name is empty"
    if len(row.name) > 100:
        return None, "name is longer than 100 characters"
    recipient = normalize(row.phone)
    if isinstance(recipient, Rejected):
        return None, f"phone {row.phone!r}: {recipient.reason.replace('_', ' ')}"
    try:
        joined = parse_date(row.joined_on)
    except ValueError as exc:
        return None, f"joined_on: {exc}"
    fields = msgspec.json.encode(row.fields).decode()
    return [recipient.phone, row.name, row.tags, joined, fields], None


# Rosters are parsed in these threads, at most two at once per process: parsing is CPU-bound
# and holds the GIL in turns with the event loop, so ten uploads at once must not mean ten
# threads starving it. More wait their turn (each parse is capped by max_parse_seconds).
_PARSERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="roster")


async def read(data: bytes, limits: ContactsSettings) -> list[Row]:
    """A roster file's rows, parsed in a thread: the event loop serves other requests meanwhile.
    RosterTooLarge over a cap, RosterError if unreadable."""
    return await asyncio.get_running_loop().run_in_executor(_PARSERS, read_roster, data, limits)


async def import_roster(
    conn: asyncpg.Connection, tenant: TenantRow, roster: list[Row]
) -> ImportResult:
    """Upsert every valid row; report each bad one with its line. A phone seen twice keeps the
    later row (the earlier line is reported)."""
    valid: dict[str, tuple[int, list[Any]]] = {}
    problems: list[RowProblem] = []
    rows = 0
    for row in roster:
        rows += 1
        columns, reason = _check(row)
        if columns is None:
            problems.append(RowProblem(line=row.line, reason=reason or "invalid"))
            continue
        phone = columns[0]
        if phone in valid:
            earlier = valid[phone][0]
            problems.append(RowProblem(line=earlier, reason=f"same phone again on line {row.line}"))
        valid[phone] = (row.line, columns)
    created = updated = 0
    if valid:
        columns_by_field = list(zip(*(columns for _, columns in valid.values()), strict=True))
        tags = [
            "{" + ",".join(_quote(t) for t in tag_list) + "}" for tag_list in columns_by_field[2]
        ]
        results = await conn.fetch(
            sql.UPSERT,
            tenant.id,
            list(columns_by_field[0]),
            list(columns_by_field[1]),
            tags,
            list(columns_by_field[3]),
            list(columns_by_field[4]),
        )
        created = sum(1 for r in results if r["inserted"])
        updated = len(results) - created
    problems.sort(key=lambda p: p.line)
    return ImportResult(rows=rows, created=created, updated=updated, rejected=problems)


def _quote(tag: str) -> str:
    """A tag as an element of a PostgreSQL array literal."""
    return '"' + tag.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def list_contacts(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    after: int,
    limit: int,
    tag: str | None,
    search: str | None,
) -> ContactPage:
    records = await conn.fetch(sql.CONTACTS_PAGE, tenant.id, after, limit + 1, tag, search)
    items = []
    for record in records[:limit]:
        values = dict(record.items())
        values["fields"] = msgspec.json.decode(values["fields"])
        items.append(msgspec.convert(values, Contact))
    more = len(records) > limit
    return ContactPage(items=items, next_after=items[-1].id if more and items else None)


async def delete_contact(conn: asyncpg.Connection, tenant: TenantRow, contact_id: int) -> None:
    if await conn.fetchval(sql.DELETE, contact_id, tenant.id) is None:
        raise NotFound("contact not found")


async def phones_for(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    tags: list[str],
    contact_ids: list[int],
    subtree: bool,
) -> tuple[list[str], list[Rejected]]:
    """Phones of contacts with any of `tags` (in the tenant's roster, or its whole subtree's) and
    of the given contact ids (the tenant's own); an unknown id is rejected on its own."""
    phones: list[str] = []
    tags = [t for t in tags if t and "\x00" not in t]  # such tags cannot match any contact
    if tags:
        records = await conn.fetch(sql.PHONES_BY_TAGS, tenant.path, tags, subtree)
        phones += [r["phone"] for r in records]
    rejected: list[Rejected] = []
    if contact_ids:
        possible = [i for i in contact_ids if 0 < i < 2**63]  # others cannot be ids at all
        found = {
            r["id"]: r["phone"] for r in await conn.fetch(sql.PHONES_BY_IDS, tenant.id, possible)
        }
        phones += [found[i] for i in contact_ids if i in found]
        rejected += [
            Rejected(to=f"contact:{i}", reason="unknown_contact")
            for i in contact_ids
            if i not in found
        ]
    return phones, rejected


async def tag_counts(
    conn: asyncpg.Connection, tenant: TenantRow, subtree: bool
) -> list[tuple[str, int]]:
    """The roster's tags (the tenant's own, or with `subtree` its whole subtree's), each with
    the number of distinct phones a send to it would reach."""
    records = await conn.fetch(sql.TAG_COUNTS, tenant.path, subtree)
    return [(r["tag"], r["phones"]) for r in records]
