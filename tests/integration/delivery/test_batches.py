"""A send's delivery batches (hub.delivery.repository.BATCHES): per carrier, in id order, at most
`batch_size` of its `accepted` messages each; every such message in exactly one batch."""

from __future__ import annotations

from collections import defaultdict

import asyncpg
import httpx

from hub.delivery import repository as sql
from tests.factories import bearer

OPTED_OUT = "+8613800000003"


def _phones() -> list[str]:
    """Four carriers interleaved, 7, 5, 3 and 1 of them (中国移动, 联通, 电信, 广电)."""
    phones: list[str] = []
    for i in range(7):
        phones += [
            f"{prefix}{i:08d}"
            for prefix, n in (("138", 7), ("130", 5), ("133", 3), ("192", 1))
            if i < n
        ]
    return phones


def _expected(rows: list[asyncpg.Record], size: int) -> list[tuple[str, int, int]]:
    """The batches by their definition, from the send's messages in id order."""
    by_carrier: defaultdict[str, list[int]] = defaultdict(list)
    for r in rows:
        if r["status"] == "accepted":
            by_carrier[r["carrier"]].append(r["id"])
    batches = [
        (carrier, ids[i], ids[min(i + size, len(ids)) - 1])
        for carrier, ids in by_carrier.items()
        for i in range(0, len(ids), size)
    ]
    return sorted(batches, key=lambda b: b[1])


async def test_batches_cut_each_carriers_accepted_messages_in_id_order(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str
) -> None:
    await live_db.execute(
        "INSERT INTO opt_outs (tenant_id, phone) SELECT id, $1 FROM tenants WHERE code = '510104'",
        OPTED_OUT,
    )
    resp = await client.post(
        "/v1/messages", json={"to": _phones(), "body": "通知"}, headers=bearer(county_key)
    )
    assert resp.status_code == 202, resp.text
    send_id = resp.json()["id"]
    rows = await live_db.fetch(
        "SELECT id, carrier, status::text FROM messages WHERE send_id = $1 ORDER BY id", send_id
    )
    assert len({r["carrier"] for r in rows}) == 4
    assert [r["status"] for r in rows].count("opted_out") == 1
    for size in (1, 2, 3, 4, 6, 7, 500):
        got = [
            (r["carrier"], r["first_id"], r["last_id"])
            for r in await live_db.fetch(sql.BATCHES, send_id, size, 0.0)
        ]
        assert got == _expected(rows, size), size
