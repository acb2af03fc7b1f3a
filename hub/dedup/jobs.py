"""Dedup jobs: keep the tables that only matter within a window bounded."""

from __future__ import annotations

from typing import Any

from hub.dedup import service
from hub.delivery import service as delivery

# Rows deleted per transaction: each batch commits, so no lock is held across the whole purge.
BATCH = 1000


async def purge_expired(ctx: dict[str, Any]) -> dict[str, int]:
    """Delete content keys, stored Idempotency-Key answers and unmatched receipts past their
    windows, a batch per transaction, until none is left; how many of each."""
    report = {"dedup_keys": 0, "idempotency_keys": 0, "unmatched_receipts": 0}
    while True:
        async with ctx["db"].acquire() as conn, conn.transaction():
            keys, answers = await service.purge(conn, BATCH)
            receipts = await delivery.purge_unmatched(conn, ctx["settings"].delivery, BATCH)
        report["dedup_keys"] += keys
        report["idempotency_keys"] += answers
        report["unmatched_receipts"] += receipts
        if max(keys, answers, receipts) < BATCH:
            return report
