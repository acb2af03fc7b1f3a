"""A send goes out under the signature approved when it was accepted, whatever is approved
while it waits in the queue."""

from __future__ import annotations

import asyncpg
import httpx

from tests.factories import bearer, make_key
from tests.integration.delivery.conftest import RunWorker, statuses


async def test_a_signature_approved_later_does_not_rewrite_an_accepted_send(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str, run_worker: RunWorker
) -> None:
    city_key = await make_key(live_db, "510100")
    queued = await client.post(
        "/v1/messages",
        json={"to": ["13800138000"], "body": "明早八点开会"},
        headers=bearer(county_key),
    )
    assert queued.status_code == 202, queued.text
    proposed = await client.put(
        "/v1/tenants/510104/signature",
        json={"signature": "锦江区委组织部"},
        headers=bearer(county_key),
    )
    approved = await client.post(
        f"/v1/signatures/{proposed.json()['pending']['id']}/review",
        json={"decision": "approve"},
        headers=bearer(city_key),
    )
    assert approved.json()["status"] == "approved", approved.text
    later = await client.post(
        "/v1/messages",
        json={"to": ["13800138001"], "body": "明早八点开会"},
        headers=bearer(county_key),
    )

    await run_worker()
    assert await statuses(live_db, queued.json()["id"]) == {"delivered": 1}
    texts = {r["phone"]: r["text"] for r in await live_db.fetch("SELECT phone, text FROM outbox")}
    assert texts == {
        "+8613800138000": "【锦江区】明早八点开会",
        "+8613800138001": "【锦江区委组织部】明早八点开会",
    }
    assert later.json()["id"] != queued.json()["id"]
