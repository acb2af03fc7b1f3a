"""Rosters: import (with a preview that writes nothing), list, edit, delete, export, and the
phones a send's tags or contact ids name; and taking an opted-out phone back (resubscribe), only
with a reason and who did it. The API's routes and the console's pages call these same
functions; every change writes its operation-log entry (hub.oplog) in the caller's transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec

from hub.calendar import shown
from hub.contacts import repository as sql
from hub.contacts.rosters import Row, parse_date, read_roster
from hub.contacts.schemas import (
    Contact,
    ContactPage,
    ContactUpdate,
    ImportResult,
    Resubscription,
    RowProblem,
)
from hub.db import Database, fetch_planned
from hub.errors import Invalid, NotFound, TooManyRequests
from hub.messages.numbers import Rejected, normalize
from hub.messages.reasons import reject_word
from hub.oplog import service as oplog
from hub.people import service as people
from hub.settings import ContactsSettings, PeopleSettings
from tenants import service as tenants
from tenants.repository import TenantRow
from tenants.service import Principal

log = logging.getLogger(__name__)


def _check(row: Row) -> tuple[list[Any], None] | tuple[None, tuple[str, str]]:
    """The row as columns to store, or why it cannot be stored (in English for the API's
    `reason`, in Chinese for the console's `words`)."""
    if row.problem:
        return None, (row.problem, row.problem_words or row.problem)
    if not row.name:
        return None, ("name is empty", "姓名为空")
    if len(row.name) > 100:
        return None, ("name is longer than 100 characters", "姓名超过 100 个字")
    recipient = normalize(row.phone)
    if isinstance(recipient, Rejected):
        return None, (
            f"phone {row.phone!r}: {recipient.reason.replace('_', ' ')}",
            f"手机号 {row.phone or '（空）'}：{reject_word(recipient.reason)}",
        )
    try:
        joined = parse_date(row.joined_on)
    except ValueError as exc:
        return None, (f"joined_on: {exc}", f"入党日期 {row.joined_on} 无法识别（应如 2021-07-01）")
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


class Checked(msgspec.Struct, frozen=True):
    """A roster checked, nothing written: the rows that would be stored (by phone, the later
    row of a phone seen twice) and each bad line with why."""

    rows: int
    valid: dict[str, tuple[int, list[Any]]]
    problems: list[RowProblem]


def check_roster(roster: list[Row]) -> Checked:
    """Every row checked as an import checks it; nothing is written (the console's preview)."""
    valid: dict[str, tuple[int, list[Any]]] = {}
    problems: list[RowProblem] = []
    rows = 0
    for row in roster:
        rows += 1
        columns, why = _check(row)
        if columns is None:
            reason, words = why or ("invalid", "无效")
            problems.append(RowProblem(line=row.line, reason=reason, words=words))
            continue
        phone = columns[0]
        if phone in valid:
            earlier = valid[phone][0]
            again = f"same phone again on line {row.line}"
            words = f"手机号与第 {row.line} 行相同（以第 {row.line} 行为准）"
            problems.append(RowProblem(line=earlier, reason=again, words=words))
        valid[phone] = (row.line, columns)
    problems.sort(key=lambda p: p.line)
    return Checked(rows=rows, valid=valid, problems=problems)


# Why a roster row of a phone the operator erased (hub.people) is not imported.
ERASED = ("phone was erased at its owner's request", "此号码已应本人要求删除，不能再加入名册")


async def without_erased(
    conn: asyncpg.Connection, checked: Checked, erasures: PeopleSettings
) -> Checked:
    """`checked` less the rows of phones the operator erased (hub.people), each reported as a
    problem (`ERASED`): the import's and the console preview's one check."""
    erased = await people.erased_among(conn, erasures, checked.valid)
    if not erased:
        return checked
    refused = [
        RowProblem(line=checked.valid[phone][0], reason=ERASED[0], words=ERASED[1])
        for phone in erased
    ]
    return Checked(
        rows=checked.rows,
        valid={p: row for p, row in checked.valid.items() if p not in erased},
        problems=sorted([*checked.problems, *refused], key=lambda p: p.line),
    )


async def import_roster(
    conn: asyncpg.Connection,
    by: Principal,
    tenant: TenantRow,
    roster: list[Row],
    erasures: PeopleSettings,
) -> ImportResult:
    """Upsert every valid row; report each bad one with its line. A phone seen twice keeps the
    later row (the earlier line is reported); an erased phone is refused (`ERASED`). One
    operation-log entry with the counts."""
    checked = await without_erased(conn, check_roster(roster), erasures)
    valid, problems, rows = checked.valid, checked.problems, checked.rows
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
    counts = {"rows": rows, "created": created, "updated": updated, "rejected": len(problems)}
    await oplog.record(conn, by, "contacts.import", tenant_id=tenant.id, detail=counts)
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
    """A page of the roster after the id `after`: with the tag `tag`, and whose name or phone
    holds `search` (literally: `%` and `_` are themselves)."""
    pattern = like_pattern(search) if search else None
    records = await fetch_planned(
        conn, sql.CONTACTS_PAGE, tenant.id, after, limit + 1, tag, pattern
    )
    items = [_contact(record) for record in records[:limit]]
    more = len(records) > limit
    return ContactPage(items=items, next_after=items[-1].id if more and items else None)


def like_pattern(text: str) -> str:
    """`text` anywhere, matched literally: LIKE's own characters escaped (ESCAPE '\\'), as
    hub.messages.followup matches a send's body."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _contact(record: asyncpg.Record) -> Contact:
    values = dict(record.items())
    values["fields"] = msgspec.json.decode(values["fields"])
    return msgspec.convert(values, Contact)


async def get_contact(conn: asyncpg.Connection, tenant: TenantRow, contact_id: int) -> Contact:
    """One contact of the tenant's roster (locked until the transaction ends), else 404."""
    record = await conn.fetchrow(sql.CONTACT, contact_id, tenant.id)
    if record is None:
        raise NotFound("contact not found")
    return _contact(record)


async def update_contact(
    conn: asyncpg.Connection,
    by: Principal,
    tenant: TenantRow,
    contact_id: int,
    change: ContactUpdate,
) -> Contact:
    """Change a contact's name, tags or free fields (what `change` gives replaces what was)."""
    was = await get_contact(conn, tenant, contact_id)
    name = was.name if change.name is None else change.name.strip()
    if not name:
        raise Invalid("name is empty", fields=[{"key": "name", "message": "empty"}])
    tags = was.tags if change.tags is None else list(dict.fromkeys(t.strip() for t in change.tags))
    tags = [t for t in tags if t]
    fields = was.fields if change.fields is None else change.fields
    await conn.execute(
        sql.UPDATE, contact_id, tenant.id, name, tags, msgspec.json.encode(fields).decode()
    )
    now = await get_contact(conn, tenant, contact_id)
    before = {"name": was.name, "tags": was.tags, "fields": was.fields}
    after = {"name": now.name, "tags": now.tags, "fields": now.fields}
    if before != after:
        await oplog.record(
            conn,
            by,
            "contacts.update",
            tenant_id=tenant.id,
            object=f"contact:{contact_id}",
            before=before,
            after=after,
        )
    return now


async def delete_contact(
    conn: asyncpg.Connection, by: Principal, tenant: TenantRow, contact_id: int
) -> None:
    gone = await conn.fetchrow(sql.DELETE_RETURNING, contact_id, tenant.id)
    if gone is None:
        raise NotFound("contact not found")
    await oplog.record(
        conn,
        by,
        "contacts.delete",
        tenant_id=tenant.id,
        object=f"contact:{contact_id}",
        before={"name": gone["name"], "phone": gone["phone"]},
    )


async def field_names(conn: asyncpg.Connection, tenant: TenantRow, most: int) -> list[str]:
    """The names of the roster's free fields (an export's extra columns), at most `most`."""
    return [r["k"] for r in await conn.fetch(sql.FIELD_NAMES, tenant.id, most)]


async def resubscribe(
    conn: asyncpg.Connection, by: Principal, code: str, phone: str, reason: str
) -> Resubscription:
    """Take back a phone that opted out of `code`'s messages (a tenant of the caller's subtree,
    else 404): only with a reason, recorded with who did it, in the operation log too. 404 when
    the phone has not opted out."""
    tenant = await tenants.get_visible(conn, by, code)
    reason = reason.strip()
    if not reason or len(reason) > 200 or not reason.isprintable():
        raise Invalid(
            "a reason (one line, at most 200 characters) is required to resubscribe a phone",
            fields=[{"key": "reason", "message": "required", "source": "body"}],
        )
    number = normalize(phone)
    if isinstance(number, Rejected):
        raise NotFound("this phone has not opted out")
    opted_out_at = await conn.fetchval(sql.END_OPT_OUT, tenant.id, number.phone)
    if opted_out_at is None:
        raise NotFound("this phone has not opted out")
    record = await conn.fetchrow(
        sql.RESUBSCRIBE, tenant.id, number.phone, opted_out_at, reason, by.actor
    )
    assert record is not None  # INSERT … RETURNING
    done = msgspec.convert(dict(record.items()), Resubscription)
    await oplog.record(
        conn,
        by,
        "contacts.resubscribe",
        tenant_id=tenant.id,
        object=f"phone:{number.phone}",
        detail={"reason": reason, "opted_out_at": opted_out_at},
    )
    return done


def _possible_ids(ids: list[int]) -> list[int]:
    """The ids that can be a contact's (others cannot be ids at all: bigint, from 1)."""
    return [i for i in ids if 0 < i < 2**63]


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
        possible = _possible_ids(contact_ids)
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


class Picked(msgspec.Struct, frozen=True):
    id: int
    name: str
    phone: str


async def picked(conn: asyncpg.Connection, tenant: TenantRow, ids: list[int]) -> list[Picked]:
    """The tenant's own contacts among `ids` (others are simply not there), by id."""
    possible = _possible_ids(ids)
    return [
        Picked(id=r["id"], name=r["name"], phone=r["phone"])
        for r in await conn.fetch(sql.CONTACTS_BY_IDS, tenant.id, possible)
    ]


# The roster's column a send's {姓名} (or {name}) names; any other placeholder names a free field.
NAME_VARIABLES = ("姓名", "name")
ENTRIES_CHUNK = 10_000


def named(name: str) -> dict[str, str]:
    """A contact's name as a send's placeholders take it: {姓名} and {name}."""
    return dict.fromkeys(NAME_VARIABLES, name) if name else {}


async def roster_values(
    conn: asyncpg.Connection, tenant: TenantRow, phones: list[str], subtree: bool
) -> dict[str, dict[str, str]]:
    """Per phone that the roster knows (the tenant's own, or with `subtree` its whole subtree's,
    the nearest tenant's contact first), the values a send's placeholders can take from it: its
    name as 姓名 and name, and, from the tenant's own roster only, its free fields (a unit's
    own columns, 身份证 say, are not for the tenants above it to fill in and read back)."""
    values: dict[str, dict[str, str]] = {}
    for start in range(0, len(phones), ENTRIES_CHUNK):
        chunk = phones[start : start + ENTRIES_CHUNK]
        for r in await conn.fetch(sql.ROSTER_ENTRIES, tenant.path, chunk, subtree):
            fields = msgspec.json.decode(r["fields"], type=dict[str, str]) if r["own"] else {}
            values[r["phone"]] = fields | named(r["name"])
    return values


# A roster uploaded for its preview is held this long for its confirmation; a tenant holds at
# most UPLOADS_HELD at once, one per uploader (each up to 20 MB in PostgreSQL: an unbounded
# number let one console user fill the database's disk with previews never confirmed).
HELD_FOR = timedelta(minutes=30)
UPLOADS_HELD = 5


async def forget_uploads(conn: asyncpg.Connection) -> int:
    """Uploads held past their time deleted (each new upload and the purge cron call this);
    how many."""
    status = await conn.execute(sql.FORGET_UPLOADS, HELD_FOR)
    return int(status.split()[-1])


async def hold_upload(
    conn: asyncpg.Connection, by: Principal, tenant: TenantRow, filename: str, data: bytes
) -> str:
    """Keep an uploaded roster (already read once for its preview) until it is confirmed: the
    token to confirm it with. It replaces the one its uploader held (whose token is let go);
    TooManyRequests when UPLOADS_HELD others of the tenant are waiting, or another upload of
    the tenant is being held right now. Uploads past their time are swept here."""
    await forget_uploads(conn)
    if not await conn.fetchval(sql.LOCK_UPLOADS, tenant.id):
        raise TooManyRequests("本单位的另一份名册正在保存，请几秒后再上传")
    held = await conn.fetch(sql.HELD_UPLOADS, tenant.id, HELD_FOR)
    others = [r["created_at"] for r in held if r["actor"] != by.actor]
    if len(others) >= UPLOADS_HELD:
        free_at = min(others) + HELD_FOR
        raise TooManyRequests(
            f"本单位已有{UPLOADS_HELD}份上传的名册等待确认，请待其确认，"
            f"或于{shown(free_at)}后再上传"
        )
    await conn.execute(sql.LET_GO_UPLOADS_OF, tenant.id, by.actor)
    token = secrets.token_urlsafe(24)
    digest = hashlib.sha256(token.encode()).digest()
    await conn.execute(sql.HOLD_UPLOAD, digest, tenant.id, by.actor, filename[:200], data)
    return token


async def reclaim_uploads(db: Database) -> None:
    """Make the space of the uploads let go (replaced, confirmed, past their time) reusable at
    once. Each is up to 20 MB of TOAST, and autovacuum, a minute apart at best, fell so far behind
    replaced previews (316 in 7 minutes) that the database grew from 61 MB to 3.9 GB; with this
    after each, the table stays near what is held. VACUUM cannot run inside a transaction: a
    caller inside one (a test's rolled-back wrapper) leaves the space to autovacuum. It runs
    after the caller's commit: a failure is logged, never the answer (the work is done)."""
    try:
        async with db.acquire() as conn:
            if not conn.is_in_transaction():
                await conn.execute(sql.RECLAIM_UPLOADS)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.warning("roster uploads not vacuumed: %r", exc)


async def peek_upload(conn: asyncpg.Connection, tenant: TenantRow, token: str) -> bytes:
    """The roster held under `token` for the tenant, left held; 404 as take_upload."""
    digest = hashlib.sha256(token.encode()).digest()
    data: bytes | None = await conn.fetchval(sql.PEEK_UPLOAD, digest, tenant.id, HELD_FOR)
    if data is None:
        raise NotFound("the uploaded roster is no longer held: upload it again")
    return data


async def take_upload(conn: asyncpg.Connection, tenant: TenantRow, token: str) -> bytes:
    """The roster held under `token` for the tenant, deleted as it is taken (a confirmation
    imports it once); 404 when it is not there or its time has passed."""
    digest = hashlib.sha256(token.encode()).digest()
    record = await conn.fetchrow(sql.TAKE_UPLOAD, digest, tenant.id, HELD_FOR)
    if record is None:
        raise NotFound("the uploaded roster is no longer held: upload it again")
    data: bytes = record["data"]
    return data


async def every_contact(
    conn: asyncpg.Connection, tenant: TenantRow, batch: int = 1_000
) -> AsyncIterator[list[Contact]]:
    """The whole roster, `batch` contacts at a time in id order (an export)."""
    after = 0
    while True:
        page = await list_contacts(conn, tenant, after, batch, None, None)
        if page.items:
            yield page.items
        if page.next_after is None:
            return
        after = page.next_after


async def tag_counts(
    conn: asyncpg.Connection, tenant: TenantRow, subtree: bool
) -> list[tuple[str, int]]:
    """The roster's tags (the tenant's own, or with `subtree` its whole subtree's), each with
    the number of distinct phones a send to it would reach."""
    query = sql.SUBTREE_TAG_COUNTS if subtree else sql.OWN_TAG_COUNTS
    records = await conn.fetch(query, tenant.path)
    return [(r["tag"], r["phones"]) for r in records]
