"""Message jobs: release scheduled and held sends when their time comes; park and unpark the
sends of suspended subtrees; close sends whose review expired."""

from __future__ import annotations

from typing import Any

from hub.dedup import service as dedup
from hub.delivery.service import enqueue_send
from hub.messages import months, review, service

# Sends per transaction: each step below commits a batch before it takes the next, so no lock
# it takes (sends, their reservations) is held for longer than one batch.
BATCH = 500
# Parked messages whose relying copies are handed the phone per transaction (each locks its keys).
STEP_ASIDE_BATCH = 200


async def release_due_sends(ctx: dict[str, Any]) -> int:
    """Sends whose suspension ended go on, due sends of suspended subtrees are parked, and
    scheduled and held sends that are due become queued: a batch per transaction, each
    batch's sends enqueued once it is committed; how many sends went on or were released."""
    db, settings = ctx["db"], ctx["settings"]

    async def enqueue(send_ids: list[int]) -> None:
        for send_id in send_ids:
            await enqueue_send(db, ctx["redis"], settings.delivery, send_id)

    moved = 0
    after = 0
    while True:  # unpark, by id (those quiet hours still hold stay parked: step past them)
        async with db.acquire() as conn, conn.transaction():
            page = await service.resumed(conn, after, BATCH)
            resumed = await service.unpark(conn, settings, page)
        await enqueue(resumed)
        moved += len(resumed)
        if len(page) < BATCH:
            break
        after = page[-1].id
    while True:
        async with db.acquire() as conn, conn.transaction():
            parked = await service.park_suspended(conn, BATCH)
        if parked < BATCH:
            break
    # Copies of other sends relying on parked messages must not wait on a suspension: every
    # pass looks (a page per transaction), so none is missed whatever stopped the last one.
    relied_after: int | None = 0
    while relied_after is not None:
        async with db.acquire() as conn, conn.transaction():
            relied_after, heirs = await dedup.step_aside(conn, relied_after, STEP_ASIDE_BATCH)
        await enqueue(heirs)
    while True:
        async with db.acquire() as conn, conn.transaction():
            released = await service.release_due(conn, BATCH)
        await enqueue(released)
        moved += len(released)
        if len(released) < BATCH:
            return moved


async def make_partitions(ctx: dict[str, Any]) -> list[str]:
    """This month's message partition and the next ones, made ahead (daily and at start)."""
    return await months.make_ahead(ctx["db"])


async def expire_reviews(ctx: dict[str, Any]) -> int:
    """Sends whose review expired are closed, their quota released: a batch per transaction;
    how many."""
    closed = 0
    while True:
        async with ctx["db"].acquire() as conn, conn.transaction():
            done = await review.expire_due(conn)
        closed += done
        if done < review.EXPIRE_BATCH:
            return closed
