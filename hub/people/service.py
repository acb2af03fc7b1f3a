"""A person's data: what the hub sent to a phone (the operator's lookup) and the phone's erasure.

Only the hub operator asks (a principal of the root tenant holding tenants:write); a tenant
below answers 403, as for the operator's other routes. Every lookup and erasure writes the
operation log under the phone's HMAC-SHA256 (`phone:<hex>`), never the phone itself: the log
is read by administrators of the root and kept for good, and a plain hash of a mobile number is
undone by trying the 10^10 of them; the HMAC needs the operator's secret, which holds the
same entries together (a lookup, then the erasure of that phone) for whoever has it.

An erased phone is kept only as that HMAC (`erased_phones`): the send path counts it opted out
for every tenant (`erased_among`, from hub.messages.service), and a roster refuses it
(hub.contacts.service). The erasure itself goes table by table, a batch per transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import asyncpg
import msgspec

from hub.db import Database
from hub.messages.numbers import Rejected, normalize
from hub.messages.segments import signed
from hub.oplog import service as oplog
from hub.people import repository as sql
from hub.people.schemas import (
    CAP,
    Erased,
    EraseRequest,
    OptOut,
    PersonData,
    PersonQuery,
    Reply,
    RosterEntry,
    SentMessage,
)
from hub.quota import service as quota
from hub.settings import PeopleSettings
from tenants import service as tenants
from tenants.errors import ApiError, Forbidden, Invalid
from tenants.service import ROOT_CODE, Principal

T = TypeVar("T")
Step = Callable[[asyncpg.Connection], Awaitable[bool]]

# Rows per transaction of an erasure; the operation log and sends are walked in id ranges.
BATCH = 1_000
RANGE = 10_000
# Phones hashed and asked at a time on the send path.
CHUNK = 10_000


class NoSecret(ApiError):
    status_code = 503
    code = "not_configured"


def require_operator(who: Principal) -> None:
    """A person's data across tenants is the hub operator's alone (the root tenant's)."""
    if who.tenant_code != ROOT_CODE:
        raise Forbidden("only the hub operator (the root tenant) looks up or erases a phone")


def phone_of(raw: str) -> str:
    """The phone as the hub stores it (E.164), else 422 naming why."""
    found = normalize(raw)
    if isinstance(found, Rejected):
        raise Invalid(
            f"phone: {found.reason.replace('_', ' ')}",
            fields=[{"key": "phone", "message": found.reason}],
        )
    return found.phone


def digits_of(phone: str) -> str:
    """How the phone's digits appear in text as submitted: a +86 phone's national number (it
    is also inside +86…, 0086… and 86…), another's digits after the +."""
    return phone[3:] if phone.startswith("+86") else phone.lstrip("+")


# A gateway reference that quotes its phone, as Alibaba's `BizId:<phone>` does (national digits
# for a +86 phone, as digits_of writes them).
_QUOTED = re.compile(r":(\d{5,15})$")


def _quoted_phone(reference: str) -> str | None:
    if (found := _QUOTED.search(reference)) is None:
        return None
    digits = found[1]
    return f"+86{digits}" if len(digits) == 11 and digits.startswith("1") else f"+{digits}"


async def quoting_erased(
    conn: asyncpg.Connection, people: PeopleSettings, references: Iterable[str]
) -> set[str]:
    """The references among these that quote an erased phone. A receipt for one comes late: the
    erasure rewrote its message's reference, so it matches nothing, and kept as unmatched it
    would hold the phone again (until the unmatched are purged)."""
    quoted = {r: phone for r in references if (phone := _quoted_phone(r)) is not None}
    if not quoted:
        return set()
    erased = await erased_among(conn, people, set(quoted.values()))
    return {r for r, phone in quoted.items() if phone in erased}


def phone_hash(secret: str, phone: str) -> bytes:
    return hmac.digest(secret.encode(), phone.encode(), hashlib.sha256)


def _secret(people: PeopleSettings) -> str:
    if not people.secret:
        raise NoSecret("set HUB_PEOPLE__SECRET first: erased phones are kept as its HMAC")
    return people.secret


def _keys(people: PeopleSettings) -> list[str]:
    return [k for k in (people.secret, *people.previous_secrets) if k]


async def is_erased(conn: asyncpg.Connection, people: PeopleSettings, phone: str) -> bool:
    return bool(await erased_among(conn, people, [phone]))


async def any_erased(conn: asyncpg.Connection) -> bool:
    """Whether the operator ever erased a phone (if not, none is checked)."""
    return bool(await conn.fetchval(sql.ANY_ERASED))


async def erased_among(
    conn: asyncpg.Connection, people: PeopleSettings, phones: Iterable[str]
) -> set[str]:
    """Which of `phones` (E.164) were erased: no tenant may message them or hold them in a
    roster. Nothing is hashed while no phone was ever erased (one probe of an empty table).
    With erased phones kept and no secret to match them, it fails closed (503) rather than
    message them again."""
    if not await any_erased(conn):
        return set()
    keys = _keys(people)
    if not keys:
        raise NoSecret("HUB_PEOPLE__SECRET is unset but erased phones are kept: set it again")
    found: set[str] = set()
    wanted = list(phones)
    for start in range(0, len(wanted), CHUNK):
        by_hash = {phone_hash(k, p): p for p in wanted[start : start + CHUNK] for k in keys}
        rows = await conn.fetch(sql.ERASED_AMONG, list(by_hash))
        found.update(by_hash[bytes(r["hash"])] for r in rows)
    return found


def _object(people: PeopleSettings, phone: str) -> str:
    return f"phone:{phone_hash(_secret(people), phone).hex()}"


def _rows(records: list[asyncpg.Record], kind: type[T]) -> list[T]:
    return [msgspec.convert(dict(r.items()), kind) for r in records]


async def lookup(
    conn: asyncpg.Connection, who: Principal, query: PersonQuery, people: PeopleSettings
) -> PersonData:
    """Everything the hub holds of the phone, across every tenant: a page of the messages to
    it (oldest first, keyset on the message id), the rosters holding it, its opt-outs and its
    replies. Logged (`person.lookup`, the phone as its HMAC)."""
    require_operator(who)
    phone = phone_of(query.phone)
    name = _object(people, phone)
    after = query.after or 0
    sent = _rows(await conn.fetch(sql.MESSAGES_TO, phone, after, query.limit + 1), sql.MessageRow)
    page = sent[: query.limit]
    contacts = _rows(await conn.fetch(sql.CONTACTS_OF, phone, CAP), sql.ContactRow)
    opt_outs = _rows(await conn.fetch(sql.OPT_OUTS_OF, phone, CAP), sql.OptOutRow)
    replies = _rows(await conn.fetch(sql.REPLIES_FROM, phone, CAP), sql.ReplyRow)
    data = PersonData(
        phone=phone,
        erased=await is_erased(conn, people, phone),
        messages=[
            SentMessage(
                id=m.id,
                tenant=m.tenant,
                send_id=m.send_id,
                at=m.created_at,
                status=m.status,
                text=signed(m.signature, m.body),
                sender=m.sender,
                system=m.system,
            )
            for m in page
        ],
        next_after=page[-1].id if len(sent) > query.limit else None,
        contacts=[RosterEntry(tenant=c.tenant, contact_id=c.id, name=c.name) for c in contacts],
        opt_outs=[OptOut(tenant=o.tenant, at=o.created_at) for o in opt_outs],
        replies=[
            Reply(
                tenant=r.tenant,
                id=r.id,
                send_id=r.send_id,
                at=r.received_at,
                text=r.text,
                opt_out=r.opt_out,
            )
            for r in replies
        ],
    )
    root = await tenants.get_by_code(conn, ROOT_CODE)
    assert root is not None  # the caller is one of its principals
    counts = {
        "messages": len(page),
        "contacts": len(contacts),
        "opt_outs": len(opt_outs),
        "replies": len(replies),
    }
    detail = {"after": after, **counts}
    await oplog.record(conn, who, "person.lookup", tenant_id=root.id, object=name, detail=detail)
    return data


class _Erasure:
    """One phone's erasure: its steps, each run a batch per transaction, and their counts."""

    def __init__(self, db: Database, phone: str, actor: str) -> None:
        self.db, self.phone, self.actor = db, phone, actor
        self.digits = digits_of(phone)
        self.counts: dict[str, int] = defaultdict(int)

    async def batches(self, run: Step) -> None:
        """`run` a transaction at a time until it finds nothing more."""
        while True:
            async with self.db.acquire() as conn, conn.transaction():
                if not await run(conn):
                    return

    async def contacts(self, conn: asyncpg.Connection) -> bool:
        ids = [r["id"] for r in await conn.fetch(sql.DELETE_CONTACTS, self.phone, BATCH)]
        if ids:
            status = await conn.execute(sql.DELETE_CAMPAIGN_DELIVERIES, ids)
            self.counts["contacts"] += len(ids)
            self.counts["campaign_deliveries"] += _affected(status)
        return bool(ids)

    async def messages(self, conn: asyncpg.Connection) -> bool:
        rows = _rows(
            await conn.fetch(sql.ERASE_MESSAGES, self.phone, BATCH, self.digits),
            sql.ErasedMessage,
        )
        if not rows:
            return False
        ids = [m.id for m in rows]
        self.counts["messages"] += len(rows)
        self.counts["dedup_keys"] += _affected(await conn.execute(sql.DELETE_DEDUP_KEYS, ids))
        self.counts["reply_waits"] += _affected(await conn.execute(sql.DELETE_REPLY_WAITS_OF, ids))
        sent = [m for m in rows if m.gateway and m.reference]
        self.counts["unmatched_receipts"] += _affected(
            await conn.execute(
                sql.DELETE_UNMATCHED, [m.gateway for m in sent], [m.reference for m in sent]
            )
        )
        await _release(conn, [m for m in rows if m.waiting], self.actor)
        return True

    async def replies(self, conn: asyncpg.Connection) -> bool:
        ids = [r["id"] for r in await conn.fetch(sql.PICK_REPLIES, self.phone, BATCH)]
        if ids:
            pushes = await conn.execute(sql.DELETE_WEBHOOK_DELIVERIES, ids)
            self.counts["webhook_deliveries"] += _affected(pushes)
            self.counts["inbound"] += _affected(await conn.execute(sql.DELETE_REPLIES, ids))
        return bool(ids)

    async def by_phone(self, table: str, statement: str, key: str | None = None) -> None:
        """`statement` ($1 the phone, or the digits with `key`; $2 the batch) until done."""

        async def step(conn: asyncpg.Connection) -> bool:
            n = _affected(await conn.execute(statement, key or self.phone, BATCH))
            self.counts[table] += n
            return n > 0

        await self.batches(step)

    async def run(self) -> dict[str, int]:
        await self.batches(self.contacts)
        await self.batches(self.messages)
        await self.by_phone("unmatched_receipts", sql.DELETE_UNMATCHED_QUOTING, self.digits)
        await self.by_phone("outbox", sql.DELETE_OUTBOX)
        await self.by_phone("reply_waits", sql.DELETE_REPLY_WAITS)
        await self.batches(self.replies)
        await self.by_phone("opt_outs", sql.DELETE_OPT_OUTS)
        await self.by_phone("resubscriptions", sql.DELETE_RESUBSCRIPTIONS)
        await self.by_phone("user_codes", sql.DELETE_USER_CODES)
        await self.by_phone("idempotency_keys", sql.DELETE_IDEMPOTENCY, self.digits)
        self.counts["sends.rejects"] += await _in_ranges(
            self.db, sql.LAST_SEND, sql.ERASE_REJECTS, self.digits
        )
        self.counts["operation_log"] += await _in_ranges(
            self.db, sql.LAST_OPERATION, sql.REDACT_OPERATIONS, self.digits, redacting=True
        )
        # Once more: a send planned before the hash was committed may have committed its
        # messages to the phone since (sends planned after it count the phone opted out).
        await self.batches(self.messages)
        return dict(sorted(self.counts.items()))


async def erase(
    db: Database, who: Principal, request: EraseRequest, people: PeopleSettings
) -> Erased:
    """Erase the phone from every roster, message, reply, opt-out and record that holds it,
    a batch per transaction; keep it as its HMAC so it is messaged no more. The operation
    log's entries that hold it are redacted (migration 0040). Returns the counts per table;
    logged (`person.erase`) with them and the reason."""
    require_operator(who)
    if "\x00" in request.reason:
        raise Invalid("reason: holds a NUL character", fields=[{"key": "reason"}])
    phone = phone_of(request.phone)
    # The reason is kept (erased_phones, the log): it must not hold the phone it erases, in
    # any spacing ("138-0013-8000").
    if digits_of(phone) in re.sub(r"\D", "", request.reason):
        raise Invalid(
            "reason: holds the phone being erased; say why without it",
            fields=[{"key": "reason", "message": "holds the phone"}],
        )
    digest = phone_hash(_secret(people), phone)
    # First the hash: from its commit on, no send reaches the phone and no roster takes it.
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(sql.KEEP_ERASED, digest, request.reason)
    counts = await _Erasure(db, phone, who.actor).run()
    async with db.acquire() as conn, conn.transaction():
        root = await tenants.get_by_code(conn, ROOT_CODE)
        assert root is not None
        detail = {"reason": request.reason, "counts": counts}
        await oplog.record(
            conn,
            who,
            "person.erase",
            tenant_id=root.id,
            object=f"phone:{digest.hex()}",
            detail=detail,
        )
    return Erased(phone_hash=digest.hex(), counts=counts)


async def _in_ranges(
    db: Database, last: str, statement: str, digits: str, *, redacting: bool = False
) -> int:
    """Run `statement` over a table in id ranges of RANGE, a transaction each; the sum."""
    async with db.acquire() as conn:
        top: int = await conn.fetchval(last)
    total = 0
    for start in range(0, top, RANGE):
        async with db.acquire() as conn, conn.transaction():
            if redacting:
                await conn.execute(sql.START_REDACTING)
            total += int(await conn.fetchval(statement, digits, start, start + RANGE) or 0)
    return total


async def _release(conn: asyncpg.Connection, waiting: list[sql.ErasedMessage], actor: str) -> None:
    """The segments of messages cancelled before they went go back to their sends' quota."""
    if not waiting:
        return
    rows = _rows(
        await conn.fetch(sql.SEND_RESERVATIONS, sorted({m.send_id for m in waiting})),
        sql.SendReservation,
    )
    reservation = {r.id: r.reservation_id for r in rows}
    parts: dict[int, tuple[int, int]] = {}
    for m in waiting:
        held = reservation.get(m.send_id)
        if held is not None:
            used, released = parts.get(held, (0, 0))
            parts[held] = (used, released + m.segments)
    if parts:
        await quota.settle_parts(conn, parts, actor)


def _affected(status: str) -> int:
    """Rows a command touched, from its status (`DELETE 3`, `UPDATE 0`)."""
    return int(status.rsplit(" ", 1)[-1])
