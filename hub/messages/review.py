"""A send caught by a review rule (hub.reviews): approved, rejected or expired.

A caught send waits in `review`: its messages written, its quota reserved (never expiring
meanwhile), its content keys unclaimed, never enqueued (delivery claims only `queued` sends).

- Approve: it goes as if sent then. Its timing is recomputed now (quiet hours, a `send_at`
  still ahead keeps it scheduled), its keys are claimed now (`service.claim_keys`, as a new
  send's: a phone another message reached meanwhile becomes a duplicate, and the segments
  reserved for a duplicate settled at once are released), and the caller enqueues it after the
  commit when it is queued.
- Reject: it is cancelled (`service.close_send`, the sender's cancel path: its messages end
  `cancelled`, its whole reservation is released), with the rejecter, the note and the time.
- Expire: a cron closes sends whose review is overdue the same way, reason "review expired".

Four eyes: a reviewer never decides the sends it created itself. Every decision is a status-
guarded update of the send's row, so of a concurrent approve, reject and cancel exactly one
wins; the others get 409.

An urgent send the rules catch went at once (`review_after`): a reviewer acknowledges it
(approve records who and when) or objects (reject records the objection; what went stays sent).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from hub import calendar
from hub.calendar import period_of
from hub.errors import Conflict, Forbidden
from hub.messages import repository as sql
from hub.messages import service
from hub.messages.repository import SendRow
from hub.oplog import service as oplog
from hub.quota import service as quota
from hub.reviews.schemas import Decision, Rejection
from hub.settings import Settings
from tenants.service import Principal, get_by_id

# Sends whose review expired, closed per transaction by the cron.
EXPIRE_BATCH = 100
EXPIRED = "review expired"
EXPIRY_ACTOR = "system:review-expiry"


def _four_eyes(who: Principal, send: SendRow) -> None:
    if send.actor == who.actor:
        raise Forbidden(
            f"send {send.id} was created by you ({who.actor}); another reviewer decides it"
        )


async def _decidable(conn: asyncpg.Connection, who: Principal, send_id: int) -> SendRow:
    """The send, if the caller may decide it: of its subtree (404 otherwise), not its own."""
    send = await service.visible_send(conn, who, send_id)
    _four_eyes(who, send)
    return send


async def _after_the_fact(
    conn: asyncpg.Connection, who: Principal, send: SendRow, approve: bool, note: str
) -> None:
    if await conn.fetchval(sql.DECIDE_AFTER, send.id, who.actor, approve, note) is None:
        raise Conflict(f"send {send.id} was already reviewed after the fact")


async def approve(
    conn: asyncpg.Connection,
    who: Principal,
    send_id: int,
    decision: Decision,
    settings: Settings,
    now: datetime | None = None,
) -> Literal["queued", "held", "scheduled", "sent"]:
    """Approve a send waiting in review (or acknowledge an urgent one that went): what it is
    now; the caller enqueues a queued one after the commit."""
    now = now or calendar.now()
    send = await _decidable(conn, who, send_id)
    action: dict[str, Any] = {"tenant_id": send.tenant_id, "object": f"send:{send_id}"}
    if send.review_after:
        await _after_the_fact(conn, who, send, True, decision.note)
        await oplog.record(conn, who, "send.review_after.approve", **action)
        return "sent"
    if send.state != "review":
        raise Conflict(f"send {send_id} is not waiting for review (it is {send.state})")
    tenant = await get_by_id(conn, send.tenant_id)
    assert tenant is not None  # tenants are never deleted
    timing = await service.timing_of(conn, tenant, send.send_at, send.priority, settings, now)
    # The guarded update locks the send: a concurrent decision or cancel waits, then finds it
    # gone from review (409).
    row = await conn.fetchrow(
        sql.APPROVE,
        send_id,
        timing.state,
        timing.due_at,
        timing.held_until,
        who.actor,
        decision.note,
    )
    if row is None:
        raise Conflict(f"send {send_id} was decided, cancelled or its review expired meanwhile")
    to_go = [
        msgspec.convert(dict(r.items()), sql.ToGo) for r in await conn.fetch(sql.TO_GO, send_id)
    ]
    bodies: str | dict[str, str] = send.body
    if any(m.body is not None for m in to_go):  # a personal send: each its own text
        bodies = {m.phone: m.body or send.body for m in to_go}
    claimed = await service.claim_keys(
        conn,
        send_id,
        tenant,
        bodies,
        to_go,
        {m.phone: m.segments for m in to_go}.__getitem__,
        send.dedup,
        settings,
        timing.due_at,
    )
    reservation_id: int | None = row["reservation_id"]
    wait = (timing.due_at - now).total_seconds()
    ttl = wait + settings.quota.reservation_ttl_seconds
    needed = claimed.going + claimed.relying
    # The month it was reserved in: the one it was asked to go in when made (service._Timing).
    asked = send.send_at if send.send_at and send.send_at > send.created_at else send.created_at
    if reservation_id is not None and timing.period != period_of(asked):
        # Approved in a later month than it was reserved in: it is charged to the month it
        # goes in, as a send made now would be (429 if that month is short: it stays in review).
        await quota.void(conn, reservation_id, who.actor)
        reservation_id = None
        if needed:
            cause = f"send:{send_id}"
            reservation_id = (
                await quota.reserve(
                    conn,
                    tenant,
                    needed,
                    cause,
                    who.actor,
                    ttl_seconds=ttl,
                    period=timing.period,
                    leases=settings.quota,
                )
            ).id
    elif reservation_id is not None:
        released = send.segments - needed
        if released:
            await quota.settle_parts(conn, {reservation_id: (0, released)}, who.actor)
        await quota.set_expiry(conn, [reservation_id], ttl)
    price = service.at_list_price(claimed.going, settings)
    await conn.execute(sql.FINISH_SEND, send_id, reservation_id, claimed.going, price)
    await oplog.record(
        conn,
        who,
        "send.approve",
        **action,
        before={"state": "review"},
        after={"state": timing.state},
        detail={"deduplicated": len(claimed.duplicates), "note": decision.note or None},
    )
    return timing.state  # type: ignore[return-value]  # never review or cancelled here


async def reject(
    conn: asyncpg.Connection, who: Principal, send_id: int, decision: Rejection
) -> list[int]:
    """Reject a send waiting in review (its sender sees the note), or object to an urgent one
    that went; the sends of heirs to enqueue (none: a send in review holds no keys)."""
    send = await _decidable(conn, who, send_id)
    action: dict[str, Any] = {"tenant_id": send.tenant_id, "object": f"send:{send_id}"}
    detail = {"note": decision.note}
    if send.review_after:
        await _after_the_fact(conn, who, send, False, decision.note)
        await oplog.record(conn, who, "send.review_after.reject", **action, detail=detail)
        return []
    heirs = await service.close_send(
        conn,
        send_id,
        ["review"],
        who.actor,
        reason="rejected",
        rejected_by=who.actor,
        note=decision.note,
    )
    await oplog.record(conn, who, "send.reject", **action, detail=detail)
    return heirs


async def expire_due(conn: asyncpg.Connection, limit: int = EXPIRE_BATCH) -> int:
    """Close up to `limit` sends whose review expired (reason "review expired", their quota
    released); how many. One transaction per call: the caller commits each batch."""
    rows = await conn.fetch(sql.REVIEWS_EXPIRED, limit)
    for r in rows:
        await service.close_send(conn, r["id"], ["review"], EXPIRY_ACTOR, reason=EXPIRED)
        await oplog.record(
            conn,
            EXPIRY_ACTOR,
            "send.review_expired",
            tenant_id=r["tenant_id"],
            object=f"send:{r['id']}",
        )
    return len(rows)
