"""Deduplication, layers 1 and 3 of DESIGN.md (layer 2, repeated phones, is in numbers.py).

Layer 1 — `Idempotency-Key`: a retried POST gets the answer the first one got. The key is held
with a transaction-scoped advisory lock while the first request runs (a retry then answers 409),
and the answer is stored in the same transaction as the work, so it exists exactly when the work
does.

Layer 3 — content: the same rendered body (signature excluded, so a province's and a county's
copies of one notice match) to the same phone within the window reaches the phone once, whoever
sends it. Claimed in PostgreSQL in the sender's transaction; concurrent claims of one key wait for
each other and exactly one wins.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import asyncpg
import msgspec

from hub.billing.service import UsageKey
from hub.calendar import business_day
from hub.db import in_turns
from hub.dedup import repository as sql
from hub.dedup.repository import Displaced, Holder, Relied, StoredAnswer
from hub.errors import Conflict, Invalid

_SPACE = re.compile(r"\s+")
# Phones asked at a time by a preview's read-only dedup check.
PREVIEW_CHUNK = 10_000
# Sends of at most this many recipients claim their keys without the scratch table: the keys go
# as arrays beside each statement (a statement's parameters; a few KiB), not by COPY.
INLINE_KEYS = 100
# A content key's length (BLAKE2b-128).
KEY_BYTES = 16


def request_hash(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def _lock_id(tenant_id: int, key: str) -> int:
    digest = hashlib.blake2b(f"{tenant_id}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def replay(
    conn: asyncpg.Connection, tenant_id: int, key: str, body_hash: bytes
) -> StoredAnswer | None:
    """The stored answer for a retry, None for a first request; 409 in flight, 422 reused key."""
    if not await conn.fetchval(sql.TRY_LOCK_KEY, _lock_id(tenant_id, key)):
        raise Conflict(
            "a request with this Idempotency-Key is still being processed; retry later",
            idempotency_key=key,
        )
    record = await conn.fetchrow(sql.STORED_ANSWER, tenant_id, key)
    if record is None:
        return None
    stored = msgspec.convert(dict(record.items()), StoredAnswer)
    if stored.request_hash != body_hash:
        raise Invalid(
            "this Idempotency-Key was used with a different request body",
            idempotency_key=key,
            fields=[
                {
                    "key": "Idempotency-Key",
                    "message": "reused with another body",
                    "source": "header",
                }
            ],
        )
    return stored


async def remember(
    conn: asyncpg.Connection,
    tenant_id: int,
    key: str,
    body_hash: bytes,
    status_code: int,
    response: bytes,
    ttl_seconds: float,
) -> None:
    await conn.execute(
        sql.SAVE_ANSWER, tenant_id, key, body_hash, status_code, response, float(ttl_seconds)
    )


def normalise_body(body: str) -> str:
    """Equal for texts a reader would call equal: NFKC, runs of white space as one space."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", body)).strip()


def content_keys(
    phones: Iterable[str], body: str | Mapping[str, str], tenant_id: int | None = None
) -> Iterator[bytes]:
    """Per phone, BLAKE2b-128 of phone ‖ NUL ‖ normalised body (the signature is not part of the
    body). One body is normalised once per send: per recipient it was 41 % of the API's CPU.

    A personal send's texts (`body` each phone's own, {姓名} filled in) are keyed within their
    tenant, `tenant_id` ‖ NUL first: they dedup a retry, never another tenant's copy — whose
    `deduplicated` would confirm a guess of the name another roster holds for a phone."""
    if not isinstance(body, str):
        assert tenant_id is not None, "a personal send's keys are its tenant's"
        for phone in phones:
            own = f"{tenant_id}\x00{phone}\x00{normalise_body(body[phone])}".encode()
            yield hashlib.blake2b(own, digest_size=KEY_BYTES).digest()
        return
    yield from map(keyer(body), phones)


def keyer(body: str) -> Callable[[str], bytes]:
    """The content key of a phone's copy of one `body` (`content_keys`, one at a time)."""
    suffix = f"\x00{normalise_body(body)}".encode()

    def key(phone: str) -> bytes:
        return hashlib.blake2b(phone.encode() + suffix, digest_size=KEY_BYTES).digest()

    return key


def unpacked(keys: bytes | bytearray) -> Iterator[bytes]:
    """Content keys kept end to end (16 bytes each), one by one."""
    view = memoryview(keys)
    return (bytes(view[i : i + KEY_BYTES]) for i in range(0, len(keys), KEY_BYTES))


class KnownKeys(NamedTuple):
    """A large send's content keys, computed as its numbers were checked, and the message each
    one is for: the claim then needs no join with the send's messages. Compact for a million
    recipients (24 bytes each, no object per key)."""

    keys: bytes | bytearray  # 16 bytes each, end to end (unpacked), in the claim's order
    message_ids: array[int]  # the same order


async def claim_send(
    conn: asyncpg.Connection,
    send_id: int,
    tenant_id: int,
    body: str | Mapping[str, str],
    phones: list[str],
    window_seconds: float,
    due_at: datetime,
    known: KnownKeys | None = None,
) -> dict[str, Holder]:
    """Claim the content keys of a send's messages (already written, due at `due_at`) for
    `phones`; returns, per phone whose key another message holds, who holds it. Keys go in by
    COPY and the claim is a few set-wise statements, so a million recipients cost no round trip
    per row. `known`: the phones' keys and messages, when known already (in their order).

    Time decides, not arrival: a copy due later than this one that has not gone out gives its key
    up, and relies on this one (within the window of this one's due time) instead of being sent.
    """
    if not phones:
        return {}
    # A few keys go as arrays beside each statement (sql.inline_keys); many go by COPY.
    inline: tuple[list[bytes], list[str]] | tuple[()] = ()
    ordered = content_keys(phones, body, tenant_id) if known is None else unpacked(known.keys)
    if len(phones) <= INLINE_KEYS:
        inline = (list(ordered), phones)
    else:
        await conn.execute(sql.PREPARE_KEYS)
        ids = () if known is None else (known.message_ids,)
        await conn.copy_records_to_table(
            "send_content_keys",
            columns=("key", "phone", "message_id")[: 2 + len(ids)],
            records=in_turns(zip(ordered, phones, *ids, strict=True)),
        )
    window = float(window_seconds)
    if inline:
        claimed = await conn.fetchval(
            sql.CLAIM_FOR_SEND_INLINE, send_id, tenant_id, window, due_at, *inline
        )
    else:
        by_id = known is not None
        claimed = await _claim(conn, send_id, tenant_id, window, due_at, len(phones), by_id)
    if claimed == len(phones):
        return {}  # every key was free: nothing to take from another message, none held
    take = sql.TAKE_FROM_LATER_INLINE if inline else sql.TAKE_FROM_LATER
    taken = [
        msgspec.convert(dict(r.items()), Displaced)
        for r in await conn.fetch(take, send_id, tenant_id, window, due_at, *inline)
    ]
    # Due within this copy's window: the later copy relies on this one; further off, it still
    # goes out itself (it only lost the key).
    covered = [t for t in taken if t.displaced_due < due_at + timedelta(seconds=window)]
    if covered:
        displaced = [t.displaced for t in covered]
        originals = [t.message_id for t in covered]
        limit = due_at + timedelta(seconds=window)
        await conn.execute(sql.REPOINT_RELYING, displaced, originals, tenant_id, limit)
        await conn.execute(sql.RELY_ON, displaced, originals, tenant_id)
    held = sql.HELD_ELSEWHERE_INLINE if inline else sql.HELD_ELSEWHERE
    records = await conn.fetch(held, send_id, *inline)
    holders = [msgspec.convert(dict(r.items()), Holder) for r in records]
    return {h.phone: h for h in holders}


class _ClaimedMeanwhile(Exception):
    """Another send claimed one of the keys between the look and the INSERT."""


async def _claim(
    conn: asyncpg.Connection,
    send_id: int,
    tenant_id: int,
    window: float,
    due_at: datetime,
    keys: int,
    by_id: bool,
) -> int:
    """A large send's keys (in send_content_keys) claimed; how many it took. When no message
    holds any of them, all by a plain INSERT (sql.CLAIM_FREE); otherwise, or should one be
    claimed meanwhile (the INSERT undone to its savepoint), by the rules (sql.CLAIM_FOR_SEND).
    Either way in one statement in key order: never half one way and half the other, whose two
    passes could deadlock with another send's claim. `by_id`: send_content_keys holds each
    key's message."""
    args = (send_id, tenant_id, window, due_at)
    if not await conn.fetchval(sql.ANY_HELD):
        try:
            async with conn.transaction():  # a savepoint
                free: int = await conn.fetchval(
                    sql.CLAIM_FREE_BY_ID if by_id else sql.CLAIM_FREE, *args
                )
                if free != keys:
                    raise _ClaimedMeanwhile
            return free
        except (asyncpg.UniqueViolationError, _ClaimedMeanwhile):
            pass
    claimed: int = await conn.fetchval(
        sql.CLAIM_FOR_SEND_BY_ID if by_id else sql.CLAIM_FOR_SEND, *args
    )
    return claimed


async def would_hold(
    conn: asyncpg.Connection,
    tenant_id: int,
    body: str | Mapping[str, str],
    phones: list[str],
    due_at: datetime,
    lane: str | None,
) -> set[str]:
    """Read-only (a preview): the phones among `phones` whose copy of `body`, due at `due_at`
    (in `lane` when it goes now; None when it waits), `claim_send` would find held by another
    message, i.e. would be deduplicated."""
    held: set[str] = set()
    for start in range(0, len(phones), PREVIEW_CHUNK):
        chunk = phones[start : start + PREVIEW_CHUNK]
        keys = list(content_keys(chunk, body, tenant_id))
        held.update(
            r["phone"] for r in await conn.fetch(sql.HELD_FOR_PREVIEW, keys, chunk, due_at, lane)
        )
    return held


async def lock_keys(conn: asyncpg.Connection, holders: list[int]) -> None:
    """Lock the content keys these messages hold, in key order (before touching the messages
    themselves, where a claim of the same keys could be waiting on them)."""
    if holders:
        await conn.fetchval(sql.LOCK_KEYS_OF, holders)


class Followed(msgspec.Struct, frozen=True):
    """What the outcomes of originals did to the copies relying on them, for the caller to settle
    with its own (one quota call, one lock order)."""

    released: dict[int, tuple[int, int]]  # {reservation: (0, segments)} of settled copies
    saved: dict[UsageKey, int]  # dedup savings per (tenant, carrier, day)
    heirs: list[int]  # sends of copies now going out in place of an original


async def follow(
    conn: asyncpg.Connection,
    reached: Sequence[int],
    missed: Sequence[int] = (),
    *,
    presumed: Sequence[int] = (),
    due_before: datetime | None = None,
) -> Followed:
    """Layer 3 follows what became of the originals. Copies relying on one that `reached` the
    phone (delivered, or no receipt came within its gateway's receipt window) are settled: their
    segments released from their sends' reservations and counted as saved. Those relying on one
    `presumed` to have reached it (no receipt yet, but the validity period is over) are settled
    only once they could not go out themselves either (their sends due before `due_before`, the
    start of a validity period ending now): a copy due later keeps relying, and goes out should
    a late receipt say the original missed.
    Those relying on one that `missed` it (failed, expired, cancelled, undelivered) get their
    notice from the first of them due, which goes out instead and takes the key.

    The originals' keys are locked first, all in one key order, so a send claiming one of them
    either committed first (its copy is seen here) or waits and finds the outcome."""
    originals = [*reached, *presumed, *missed]
    if not originals:
        return Followed({}, {}, [])
    await lock_keys(conn, originals)
    # Then the relying copies' sends (shared, id order), before any copy: a cancel locks its
    # send before its copies, so it either closed them before or waits for us. None locked:
    # no copy relies on these (with their keys locked, no claim can make one), so none to
    # settle — the common case, a statement less per chunk of receipts.
    relying_sends = await conn.fetchval(sql.LOCK_RELYING_SENDS, originals)
    released: dict[int, tuple[int, int]] = {}
    saved: dict[UsageKey, int] = defaultdict(int)
    today = business_day()
    settled: list[asyncpg.Record] = []
    if reached and relying_sends:
        settled += await conn.fetch(sql.SETTLE_RELYING, list(reached), None)
    if presumed and due_before is not None and relying_sends:
        settled += await conn.fetch(sql.SETTLE_RELYING, list(presumed), due_before)
    for record in settled:
        r = msgspec.convert(dict(record.items()), Relied)
        if r.reservation_id is not None:
            released[r.reservation_id] = (0, released.get(r.reservation_id, (0, 0))[1] + r.segments)
        saved[r.tenant_id, r.carrier, today] += r.segments
    heirs: list[int] = []
    if missed:
        heirs = [r["send_id"] for r in await conn.fetch(sql.HAND_OVER, list(missed), False)]
    return Followed(released, dict(saved), heirs)


async def step_aside(
    conn: asyncpg.Connection, after: int, limit: int
) -> tuple[int | None, list[int]]:
    """One page of the parked messages other copies rely on (their tenant or one above it
    suspended), after message `after`: no other tenant's copy waits on a suspension. The first
    of its copies that can go (not parked itself) gets the phone and goes out instead, holding
    the key, and the parked message relies on it in turn: settled when it arrives, handed the
    phone back should it miss. Returns where the next page starts (None: the walk is over) and
    the heirs' sends (to enqueue after the commit). Locks as `follow` does: keys, then the
    relying copies' sends, then the messages."""
    page = [r["id"] for r in await conn.fetch(sql.PARKED_RELIED_ON, after, limit)]
    if not page:
        return None, []
    await lock_keys(conn, page)
    await conn.fetchval(sql.LOCK_RELYING_SENDS, page)
    parked = [r["id"] for r in await conn.fetch(sql.LOCK_PARKED, page)]
    heirs = [r["send_id"] for r in await conn.fetch(sql.HAND_OVER, parked, True)] if parked else []
    return (page[-1] if len(page) == limit else None), heirs


async def cancel_send(conn: asyncpg.Connection, send_id: int, cancelled: list[int]) -> list[int]:
    """A send was cancelled (its messages `cancelled` as listed): its own relying copies are
    closed with it, and the keys its messages held pass to the copies that relied on them;
    returns the sends of those heirs (a queued one is enqueued after the commit)."""
    await conn.execute(sql.CLOSE_RELYING_OF_SEND, send_id)
    return (await follow(conn, [], cancelled)).heirs


def merge_parts(
    *parts: dict[int, tuple[int, int]],
) -> dict[int, tuple[int, int]]:
    """Pieces of reservations added up, to settle them in one call (one lock order)."""
    merged: dict[int, tuple[int, int]] = {}
    for piece in parts:
        for reservation, (used, released) in piece.items():
            before = merged.get(reservation, (0, 0))
            merged[reservation] = (before[0] + used, before[1] + released)
    return merged


async def purge(conn: asyncpg.Connection, batch: int) -> tuple[int, int]:
    """One batch of content keys and stored answers past their windows deleted; how many."""
    keys = await conn.execute(sql.PURGE_KEYS, batch)
    answers = await conn.execute(sql.PURGE_ANSWERS, batch)
    return int(keys.split()[-1]), int(answers.split()[-1])
