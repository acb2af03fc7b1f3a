"""Delivery jobs: one batch of a send's messages; the sweeper that recovers lost work."""

from __future__ import annotations

from typing import Any

from hub.delivery import service


async def deliver(
    ctx: dict[str, Any], send_id: int, carrier: str, first_id: int, last_id: int
) -> int:
    """Deliver one batch (idempotent: only `accepted` messages are claimed); how many it took."""
    delivery: service.Delivery = ctx["delivery"]
    return await delivery.deliver_batch(send_id, carrier, first_id, last_id)


async def sweep(ctx: dict[str, Any]) -> dict[str, int]:
    """Re-enqueue what Redis lost, take back expired leases, expire, close finished sends."""
    return await service.sweep(ctx["db"], ctx["redis"], ctx["settings"].delivery)
