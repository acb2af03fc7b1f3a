"""A tenant rotates its webhook secret without missing pushes (docs/OPERATIONS.md, "Rotating
secrets"): for a day after the new secret is set, each push is signed under both — the new in
X-Hub-Signature, the old in X-Hub-Signature-Previous — so a receiver holding either accepts
it; after the day only the new one signs. The day is the hub's clock, moved here in SQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import asyncpg
import httpx
import pytest

from hub import calendar
from hub.db import SingleConnectionDatabase
from hub.delivery import inbound, webhooks
from hub.delivery.gateway import Inbound
from hub.settings import Settings
from tests.factories import bearer
from tests.integration.delivery.test_webhooks import Endpoint, Pushed, address
from tests.peers.aliyun import serve

OLD = "the-tenants-old-webhook-secret"
NEW = "the-tenants-new-webhook-secret"
OTHER = "a-secret-nobody-has-set-at-all"


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """The tenant's receiver (it records every push and answers 200) on a loopback port."""
    receiver = Endpoint()
    with serve(receiver) as url:
        receiver.url = f"{url}hooks/sms"
        yield receiver


async def _set(client: httpx.AsyncClient, key: str, url: str, secret: str) -> None:
    answer = await client.put(
        "/v1/tenants/510104/webhook", json={"url": url, "secret": secret}, headers=bearer(key)
    )
    assert answer.status_code == 204, answer.text


async def _push_one(conn: asyncpg.Connection, endpoint: Endpoint, n: int) -> Pushed:
    """A reply stored, pushed by the push job's own function, as the endpoint got it."""
    to = await address(conn)
    async with conn.transaction():
        await inbound.store(
            conn, Settings().delivery, "outbox", [Inbound("13800138000", to, f"收到{n}")]
        )
    async with webhooks.client(private_ok=True) as http:
        assert await webhooks.push_due(SingleConnectionDatabase(conn), http) == 1
    return endpoint.pushed[-1]


def _accepted_by(push: Pushed, secret: str) -> bool:
    """What a receiver holding `secret` decides, reading both headers."""
    return webhooks.verify(
        secret,
        push.headers["x-hub-timestamp"],
        push.body,
        push.headers["x-hub-signature"],
        previous_signature=push.headers.get("x-hub-signature-previous", ""),
    )


async def _move_clock(conn: asyncpg.Connection, ahead: timedelta) -> None:
    """The hub's clock, as this connection's SQL reads it, `ahead` further on."""
    offset = calendar.CLOCK.offset + ahead
    await conn.execute(f"SET {calendar.OFFSET_SETTING} = '{offset.total_seconds():.6f} seconds'")


async def test_pushes_are_signed_under_both_secrets_for_a_day_then_the_new_one(
    live_db: asyncpg.Connection,
    county_key: str,
    client: httpx.AsyncClient,
    endpoint: Endpoint,
) -> None:
    await _set(client, county_key, endpoint.url, OLD)
    before = await _push_one(live_db, endpoint, 1)
    assert "x-hub-signature-previous" not in before.headers
    assert _accepted_by(before, OLD)
    assert not _accepted_by(before, NEW)

    # The tenant sets its new secret; its receiver still holds the old one for a while.
    await _set(client, county_key, endpoint.url, NEW)
    during = await _push_one(live_db, endpoint, 2)
    assert _accepted_by(during, OLD)  # the receiver not yet switched
    assert _accepted_by(during, NEW)  # the receiver switched
    assert not _accepted_by(during, OTHER)
    # X-Hub-Signature alone is the new secret's: a receiver reading only it needs the new one.
    stamp = during.headers["x-hub-timestamp"]
    assert during.headers["x-hub-signature"] == webhooks.sign(NEW, stamp, during.body)
    # Setting the same secret again (a retried request) does not restart the overlap.
    until = await live_db.fetchval("SELECT previous_until FROM webhooks")
    await _set(client, county_key, endpoint.url, NEW)
    assert await live_db.fetchval("SELECT previous_until FROM webhooks") == until

    # Nearly a day on, the old one still signs; past the day it no longer does.
    await _move_clock(live_db, timedelta(hours=23, minutes=59))
    late = await _push_one(live_db, endpoint, 3)
    assert _accepted_by(late, OLD)
    await _move_clock(live_db, timedelta(hours=24, minutes=1))
    after = await _push_one(live_db, endpoint, 4)
    assert "x-hub-signature-previous" not in after.headers
    assert _accepted_by(after, NEW)
    assert not _accepted_by(after, OLD)
    # The GET never shows a secret, old or new.
    shown = await client.get("/v1/tenants/510104/webhook", headers=bearer(county_key))
    assert OLD not in shown.text
    assert NEW not in shown.text


async def test_the_overlap_is_neither_stretched_by_going_back_nor_carried_to_a_new_url(
    live_db: asyncpg.Connection,
    county_key: str,
    client: httpx.AsyncClient,
    endpoint: Endpoint,
) -> None:
    """Switching back and forth between two secrets does not keep the older valid past the
    first day, and a new URL never gets signatures under the secret its receiver never had."""
    await _set(client, county_key, endpoint.url, OLD)
    await _set(client, county_key, endpoint.url, NEW)
    until = await live_db.fetchval("SELECT previous_until FROM webhooks")
    await _move_clock(live_db, timedelta(hours=12))
    await _set(client, county_key, endpoint.url, OLD)  # back
    await _set(client, county_key, endpoint.url, NEW)  # and forth
    assert await live_db.fetchval("SELECT previous_until FROM webhooks") == until
    await _move_clock(live_db, timedelta(hours=24, minutes=1))
    after = await _push_one(live_db, endpoint, 1)
    assert "x-hub-signature-previous" not in after.headers

    # Another party's URL with its own secret: nothing is signed with the tenant's old one.
    await _set(client, county_key, endpoint.url, OTHER)  # an overlap starts for NEW …
    assert await live_db.fetchval("SELECT previous_secret FROM webhooks") == NEW
    await _set(client, county_key, f"{endpoint.url}/other-party", OLD)  # … and ends here
    moved = await _push_one(live_db, endpoint, 2)
    assert "x-hub-signature-previous" not in moved.headers
    assert not _accepted_by(moved, NEW)


def test_verify_takes_either_header_but_never_an_empty_one() -> None:
    body, stamp = b'{"id": 1}', "1700000000"
    new, old = webhooks.sign(NEW, stamp, body), webhooks.sign(OLD, stamp, body)
    at = float(stamp)
    assert webhooks.verify(OLD, stamp, body, new, previous_signature=old, now=at)
    assert webhooks.verify(NEW, stamp, body, new, previous_signature=old, now=at)
    assert not webhooks.verify(OTHER, stamp, body, new, previous_signature=old, now=at)
    assert not webhooks.verify(OLD, stamp, body, new, now=at)
    assert not webhooks.verify(OLD, stamp, body, "", previous_signature="", now=at)
    assert not webhooks.verify(OLD, stamp, body, "sha256=é", previous_signature="ü", now=at)
    # Stale timestamps are refused whichever header matches.
    assert not webhooks.verify(OLD, stamp, body, new, previous_signature=old, now=at + 301)


pytestmark = pytest.mark.usefixtures("live_settings")
