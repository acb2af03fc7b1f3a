"""Delivery jobs: one batch of a send's messages; the sweeper that recovers lost work; the net
under dedup's relying copies; webhook pushes of replies."""

from __future__ import annotations

import time
from typing import Any

from hub.delivery import service, webhooks


async def deliver(
    ctx: dict[str, Any], send_id: int, carrier: str, first_id: int, last_id: int
) -> int:
    """Deliver one batch (idempotent: only `accepted` messages are claimed); how many it took."""
    delivery: service.Delivery = ctx["delivery"]
    return await delivery.deliver_batch(send_id, carrier, first_id, last_id)


async def sweep(ctx: dict[str, Any]) -> dict[str, int]:
    """Re-enqueue what Redis lost, take back expired leases, expire, close finished sends."""
    return await service.sweep(ctx["db"], ctx["redis"], ctx["settings"].delivery)


async def decide(ctx: dict[str, Any]) -> dict[str, int]:
    """Settle or hand over the copies relying on originals whose outcome is now known (the
    receipt's own path does this as it comes; this is the net, and the end of the wait for a
    receipt that never came)."""
    return await service.decide(ctx["db"], ctx["redis"], ctx["settings"].delivery)


# A push job stops starting new rounds after this long; the cron's next run carries on.
WEBHOOK_JOB_SECONDS = 60.0


async def push_webhooks(ctx: dict[str, Any]) -> int:
    """Push due replies to tenants' webhooks, round after full round (idempotent: each push is
    claimed under a lease); how many were tried."""
    deadline = time.monotonic() + WEBHOOK_JOB_SECONDS
    tried = 0
    while True:
        pushed = await webhooks.push_due(ctx["db"], ctx["webhooks"])
        tried += pushed
        if pushed < webhooks.BATCH or time.monotonic() > deadline:
            return tried
