"""The purge: keep the tables that only matter within a window bounded (dedup keys, stored
Idempotency-Key answers, unmatched receipts, reply waits, roster uploads awaiting confirmation,
cron ticks past a week)."""

from __future__ import annotations

from typing import Any

from hub import calendar, crons
from hub.contacts import service as contacts
from hub.dedup import service
from hub.delivery import service as delivery

# Rows deleted per transaction: each batch commits, so no lock is held across the whole purge.
BATCH = 1000


async def purge_expired(ctx: dict[str, Any]) -> dict[str, int]:
    """Delete content keys, stored Idempotency-Key answers, unmatched receipts and reply waits
    past their windows, a batch per transaction, until none is left, and roster uploads held
    past their time; how many of each."""
    config = ctx["settings"].delivery
    report = {"dedup_keys": 0, "idempotency_keys": 0, "unmatched_receipts": 0, "reply_waits": 0}
    while True:
        async with ctx["db"].acquire() as conn, conn.transaction():
            keys, answers = await service.purge(conn, BATCH)
            receipts = await delivery.purge_unmatched(conn, config, BATCH)
            waits = await delivery.purge_reply_waits(conn, config, BATCH)
        report["dedup_keys"] += keys
        report["idempotency_keys"] += answers
        report["unmatched_receipts"] += receipts
        report["reply_waits"] += waits
        if max(keys, answers, receipts, waits) < BATCH:
            break
    async with ctx["db"].acquire() as conn:
        report["roster_uploads"] = await contacts.forget_uploads(conn)
        report["cron_ticks"] = 0
        while (ticks := await crons.purge(conn, calendar.now(), BATCH)) > 0:
            report["cron_ticks"] += ticks
    return report
