"""A person's data through real delivery (the outbox gateway, an in-process worker): an erased
phone reaches no gateway, whatever tenant sends to it, and a second-factor code reaches the
phone while no stored row keeps it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from hub.delivery.gateway import Outbound, Outcome
from hub.delivery.gateways.outbox import OutboxGateway
from hub.settings import PeopleSettings, Settings
from hub.users import service as users
from tenants.scopes import Role
from tests.factories import bearer, make_key
from tests.integration.delivery.conftest import RunWorker, audit_clean
from tests.integration.users.conftest import SAME_ORIGIN, make_user, sign_in

PHONE, OTHER = "+8613800138000", "+8618612345678"


@pytest.fixture
def live_settings(live_settings: Settings) -> Settings:
    return msgspec.structs.replace(live_settings, people=PeopleSettings(secret="s"))


async def _send(client: httpx.AsyncClient, key: str, to: list[str], body: str) -> dict[str, Any]:
    response = await client.post("/v1/messages", json={"to": to, "body": body}, headers=bearer(key))
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_an_erased_phone_reaches_no_gateway(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str, run_worker: RunWorker
) -> None:
    root = await make_key(live_db, "000000")
    qingyang = await make_key(live_db, "510105")
    # Sent before the erasure, not delivered yet: the erasure cancels it.
    before = await _send(client, county_key, [PHONE, OTHER], "明早八点开会")
    # A copy of it from another county, relying on it to reach the phone: erased, it is done.
    copy = await _send(client, qingyang, [PHONE], "明早八点开会")
    assert copy["counts"]["deduplicated"] == 1
    erased = await client.post(
        "/v1/people/erase", json={"phone": PHONE, "reason": "本人申请"}, headers=bearer(root)
    )
    assert erased.status_code == 200, erased.text
    assert erased.json()["counts"]["messages"] == 2
    after = await _send(client, qingyang, [PHONE, OTHER], "周五学习")
    assert after["counts"] == {
        "accepted": 1,
        "deduplicated": 0,
        "opted_out": 1,
        "rejected": 0,
        "repeated": 0,
    }
    worker = await run_worker()
    assert worker.jobs_failed == 0
    outbox = await live_db.fetch("SELECT phone FROM outbox ORDER BY message_id")
    assert [r["phone"] for r in outbox] == [OTHER, OTHER]
    rows = await live_db.fetch(
        "SELECT send_id, phone, status::text AS status FROM messages ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (before["id"], None, "cancelled"),
        (before["id"], OTHER, "delivered"),
        (copy["id"], None, "deduplicated"),
        (after["id"], None, "opted_out"),
        (after["id"], OTHER, "delivered"),
    ]
    # The cancelled message's segment and the copy's went back: no send holds any.
    reservations = await live_db.fetch(
        "SELECT status::text AS status, used_part, released_part FROM quota_reservations"
        " ORDER BY id"
    )
    assert [tuple(r) for r in reservations] == [
        ("posted", 1, 1),
        ("voided", 0, 1),
        ("posted", 1, 0),
    ]
    assert await audit_clean(live_db) == []


async def test_a_second_factor_code_reaches_the_phone_and_is_stored_nowhere(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    county_key: str,
    run_worker: RunWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given: list[str] = []
    submit = OutboxGateway.submit

    async def watched(self: OutboxGateway, messages: Sequence[Outbound]) -> list[Outcome]:
        given.extend(m.text for m in messages)
        return await submit(self, messages)

    monkeypatch.setattr(OutboxGateway, "submit", watched)
    await make_user(live_db, "000000", "op.admin", {Role.ADMIN}, phone="13700137000")
    asked = await sign_in(client, "op.admin")
    assert asked.headers["location"].startswith("/dashboard/code"), asked.text
    send_id = await live_db.fetchval("SELECT id FROM sends WHERE actor = $1", users.CODE_ACTOR)
    # The stored send has the placeholder; the code is only in the message's own text.
    assert "******" in await live_db.fetchval("SELECT body FROM sends WHERE id = $1", send_id)

    worker = await run_worker()
    assert worker.jobs_failed == 0
    assert len(given) == 1
    found = re.search(r"验证码：(\d{6})，", given[0])
    assert found is not None, given
    code = found[1]
    # Delivered; after that no row of the hub's holds the code. The outbox gateway stands for
    # the carrier and the phone: it keeps what the phone got (`hub outbox --phone` shows the
    # code to an operator with no carrier), until its own retention period.
    stored = await live_db.fetchrow(
        "SELECT s.body AS send, m.body AS message, m.status::text AS status, o.text AS outbox"
        " FROM sends s JOIN messages m ON m.send_id = s.id"
        " LEFT JOIN outbox o ON o.message_id = m.id WHERE s.id = $1",
        send_id,
    )
    assert stored is not None
    assert stored["status"] == "delivered"
    assert stored["message"] is None
    assert code not in stored["send"]
    assert code in stored["outbox"]
    logged = await live_db.fetchval("SELECT string_agg(detail::text, ' ') FROM operation_log")
    assert code not in (logged or "")
    # It is the real code: it opens the console.
    entered = await client.post("/dashboard/code", data={"code": code}, headers=SAME_ORIGIN)
    assert entered.status_code == 303, entered.text
    # No operator key or person with messages:read lists it, opens it or its recipients.
    root = await make_key(live_db, "000000")
    listed = await client.get("/v1/messages", params={"subtree": "true"}, headers=bearer(root))
    assert listed.status_code == 200
    assert send_id not in [s["id"] for s in listed.json()["items"]]
    for path in [f"/v1/messages/{send_id}", f"/v1/messages/{send_id}/recipients"]:
        assert (await client.get(path, headers=bearer(root))).status_code == 404, path
