"""Dedup follows what went out, through a real worker: a copy that relied on another is settled
when that one is sent, and goes out itself when that one fails at the gateway or expires. And
the purge cron keeps the window-bound tables bounded."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub import calendar
from hub.billing import service as billing
from hub.calendar import current_period, next_period
from hub.db import PoolDatabase, SingleConnectionDatabase, create_pool
from hub.dedup import jobs as dedup_jobs
from hub.delivery import service as delivery
from hub.delivery.gateway import Receipt
from hub.messages import jobs as message_jobs
from hub.messages import service as messages
from hub.settings import Settings
from hub.worker import cron_jobs
from tests.factories import bearer, grant, hold_references, make_key
from tests.integration.delivery.conftest import (
    RunWorker,
    audit_clean,
    live_client,
    statuses,
    with_gateways,
)
from tests.peers.aliyun import AliyunFake, running

PHONE = "13800138000"
BODY = "请于明日九时参加理论学习中心组集体学习"


async def _post(client: httpx.AsyncClient, key: str, **extra: object) -> int:
    answer = await client.post(
        "/v1/messages", json={"to": [PHONE], "body": BODY, **extra}, headers=bearer(key)
    )
    assert answer.status_code == 202, answer.text
    send_id: int = answer.json()["id"]
    return send_id


async def _reservation(conn: asyncpg.Connection, send_id: int) -> str | None:
    status: str | None = await conn.fetchval(
        "SELECT r.status::text FROM quota_reservations r JOIN sends s ON s.reservation_id = r.id"
        " WHERE s.id = $1",
        send_id,
    )
    return status


async def _dedup_saved(conn: asyncpg.Connection) -> dict[str, int]:
    path = await conn.fetchval("SELECT path FROM tenants WHERE code = '510000'")
    rows = await billing.usage(conn, path, current_period(), subtree=True)
    return {r.tenant: r.dedup for r in rows if r.dedup}


async def test_the_urgent_copy_goes_now_and_the_one_due_tomorrow_is_settled_against_it(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str, run_worker: RunWorker
) -> None:
    month = next_period(current_period())  # tomorrow may be next month
    await grant(
        live_db, {"000000": 10_000, "510000": 5_000, "510100": 3_000, "510104": 1_000}, month
    )
    tomorrow = await _post(
        client, county_key, send_at=(calendar.now() + timedelta(hours=20)).isoformat()
    )
    city = await make_key(live_db, "510100")
    urgent = await _post(client, city, priority="urgent")
    assert await _dedup_saved(live_db) == {}  # nothing saved before the urgent copy is sent

    await run_worker()
    assert await statuses(live_db, urgent) == {"delivered": 1}
    # The copy due tomorrow is settled: never sent, its segment released and counted as saved.
    assert await statuses(live_db, tomorrow) == {"deduplicated": 1}
    assert await _reservation(live_db, tomorrow) == "voided"
    assert await _dedup_saved(live_db) == {"510104": 1}
    # Tomorrow comes: nothing of it goes out.
    await live_db.execute(
        "UPDATE sends SET due_at = hub_now() - interval '1 second' WHERE id = $1", tomorrow
    )
    assert await messages.release_due(live_db) == [tomorrow]
    await run_worker()
    assert await live_db.fetchval("SELECT count(*) FROM outbox") == 1
    assert await audit_clean(live_db) == []


async def test_a_copy_relying_on_one_the_gateway_refuses_goes_out_instead(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    city = await make_key(live_db, "510100")
    with running(AliyunFake()) as fake:
        ali = fake.gateway()
        settings = with_gateways(live_settings, ali)
        async for client in live_client(settings, redis):
            original = await _post(client, county_key)
            copy = await _post(client, city)
        assert await statuses(live_db, copy) == {"deduplicated": 1}
        # The provider refuses the original's request for good (as a withdrawn template).
        fake.fail_next(1, "isv.SMS_TEMPLATE_ILLEGAL")
        await run_worker(settings)
        assert await statuses(live_db, original) == {"failed": 1}
        # The city's copy went out in its place: the phone gets the notice once.
        assert await statuses(live_db, copy) == {"sent": 1}
        assert [(s.phone, s.text) for s in fake.sent] == [("13800138000", f"【成都市】{BODY}")]
    assert await _reservation(live_db, original) == "voided"
    assert await _reservation(live_db, copy) == "posted"
    assert await _dedup_saved(live_db) == {}
    holder = await live_db.fetchval("SELECT message_id FROM dedup_keys")
    assert holder == await live_db.fetchval("SELECT id FROM messages WHERE send_id = $1", copy)
    assert await audit_clean(live_db) == []


async def test_a_copy_relying_on_one_that_expired_goes_out_instead(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str, run_worker: RunWorker
) -> None:
    city = await make_key(live_db, "510100")
    original = await _post(client, county_key)
    copy = await _post(client, city)
    assert await statuses(live_db, copy) == {"deduplicated": 1}
    # The original waited past its validity (its worker never came): it expires.
    await live_db.execute(
        "UPDATE sends SET due_at = hub_now() - interval '7 hours' WHERE id = $1", original
    )
    await run_worker()
    assert await statuses(live_db, original) == {"expired": 1}
    assert await statuses(live_db, copy) == {"delivered": 1}
    sent = await live_db.fetch("SELECT phone, text FROM outbox")
    assert [(r["phone"], r["text"]) for r in sent] == [("+8613800138000", f"【成都市】{BODY}")]
    assert await audit_clean(live_db) == []


async def test_the_purge_cron_removes_what_is_past_its_window_and_keeps_the_rest(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    county_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "hub.dedup.purge.cron" in {job.name for job in cron_jobs()}
    validity = live_settings.delivery.validity_seconds
    tenant = await live_db.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    for n in range(5):  # past their windows
        await live_db.execute(
            "INSERT INTO dedup_keys (key, message_id, tenant_id, due_at, expires_at)"
            " VALUES ($1, $2, $3, hub_now() - interval '25 hours', hub_now() - interval '1 hour')",
            bytes([n]) * 16,
            n + 1,
            tenant,
        )
        await live_db.execute(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status_code, response,"
            " expires_at) VALUES ($1, $2, '\\x00', 202, '\\x00', hub_now() - interval '1 second')",
            tenant,
            f"old-{n}",
        )
        await live_db.execute(
            "INSERT INTO unmatched_receipts (gateway, reference, status, code, received_at)"
            " VALUES ('outbox', $1, 'delivered', 'DELIVRD',"
            " hub_now() - make_interval(secs => $2 + 60))",
            f"old-{n}",
            validity,
        )
    # Within their windows: a key due tomorrow, a fresh answer, a receipt that may still match.
    await live_db.execute(
        "INSERT INTO dedup_keys (key, message_id, tenant_id, due_at, expires_at)"
        " VALUES ($1, 99, $2, hub_now() + interval '20 hours', hub_now() + interval '44 hours')",
        b"\xff" * 16,
        tenant,
    )
    await live_db.execute(
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status_code, response,"
        " expires_at) VALUES ($1, 'fresh', '\\x00', 202, '\\x00', hub_now() + interval '1 hour')",
        tenant,
    )
    await live_db.execute(
        "INSERT INTO unmatched_receipts (gateway, reference, status, code)"
        " VALUES ('outbox', 'fresh', 'delivered', 'DELIVRD')"
    )

    monkeypatch.setattr(dedup_jobs, "BATCH", 2)  # several small committed batches
    assert live_settings.db.dsn
    db = PoolDatabase(await create_pool(live_settings.db, live_settings.db.dsn))
    try:
        report = await dedup_jobs.purge_expired({"db": db, "settings": live_settings})
    finally:
        await db.close()
    assert report == {
        "dedup_keys": 5,
        "idempotency_keys": 5,
        "unmatched_receipts": 5,
        "reply_waits": 0,
        "roster_uploads": 0,
        "cron_ticks": 0,
    }
    assert await live_db.fetchval("SELECT array_agg(message_id) FROM dedup_keys") == [99]
    assert await live_db.fetchval("SELECT array_agg(key) FROM idempotency_keys") == ["fresh"]
    assert await live_db.fetchval("SELECT array_agg(reference) FROM unmatched_receipts") == [
        "fresh"
    ]
    # A late receipt still within the window is applied as before (not purged away).
    assert await delivery.purge_unmatched(live_db, live_settings.delivery, 100) == 0


async def test_the_purge_ends_reply_waits_that_can_link_nothing_and_stale_uploads(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    client: httpx.AsyncClient,
    county_key: str,
) -> None:
    phones = ["13800138000", "18612345678", "13311112222", "19212345678"]
    sent = await client.post(
        "/v1/messages",
        json={"to": phones, "body": "明天开会，回复1确认", "reply_wanted": True},
        headers=bearer(county_key),
    )
    assert sent.status_code == 202, sent.text
    window = live_settings.delivery.reply_window_seconds
    ids = [r["id"] for r in await live_db.fetch("SELECT id FROM messages ORDER BY phone")]
    # Went longer than the reply window ago; went just now; cancelled; still to go.
    await live_db.execute(
        "UPDATE messages SET status = 'delivered', sent_at = hub_now() - make_interval(secs => $2)"
        " - interval '1 minute', done_at = hub_now() WHERE id = $1",
        ids[0],
        window,
    )
    await live_db.execute(
        "UPDATE messages SET status = 'delivered', sent_at = hub_now(), done_at = hub_now()"
        " WHERE id = $1",
        ids[1],
    )
    await live_db.execute(
        "UPDATE messages SET status = 'cancelled', done_at = hub_now() WHERE id = $1", ids[2]
    )
    tenant = await live_db.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    for name, age in (("old.csv", timedelta(minutes=31)), ("new.csv", timedelta(minutes=1))):
        await live_db.execute(
            "INSERT INTO roster_uploads (token_hash, tenant_id, actor, filename, data, created_at)"
            " VALUES ($1, $2, 'key:x', $3, '\\x00', hub_now() - $4::interval)",
            name.encode().ljust(32, b"-"),
            tenant,
            name,
            age,
        )
    assert live_settings.db.dsn
    db = PoolDatabase(await create_pool(live_settings.db, live_settings.db.dsn))
    try:
        report = await dedup_jobs.purge_expired({"db": db, "settings": live_settings})
    finally:
        await db.close()
    assert (report["reply_waits"], report["roster_uploads"]) == (2, 1)
    waiting = await live_db.fetch("SELECT message_id FROM reply_waits ORDER BY message_id")
    assert [r["message_id"] for r in waiting] == sorted([ids[1], ids[3]])
    assert await live_db.fetchval("SELECT filename FROM roster_uploads") == "new.csv"


async def _sent_7_hours_ago(conn: asyncpg.Connection, send_id: int, reference: str) -> None:
    """The send's message went through the outbox 7 hours ago (past the validity period, within
    the receipt window), and no receipt has come."""
    sent = await conn.fetch(
        "UPDATE messages SET status = 'sent', gateway = 'outbox', reference = $2, attempts = 1,"
        " sent_at = hub_now() - interval '7 hours', submitted_at = hub_now() - interval '7 hours'"
        " WHERE send_id = $1 RETURNING id",
        send_id,
        reference,
    )
    await hold_references(conn, *(r["id"] for r in sent))


async def _relying(conn: asyncpg.Connection, send_id: int) -> bool:
    """Whether the send's message is a copy still relying on its original (not settled)."""
    done: bool = await conn.fetchval(
        "SELECT status = 'deduplicated' AND done_at IS NULL FROM messages WHERE send_id = $1",
        send_id,
    )
    return done


async def test_a_copy_relying_on_one_the_carrier_reports_undelivered_goes_out_instead(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    """`sent` is not `arrived`: the copy relies on the original until its receipt, and an
    `undelivered` one hands the phone to the copy, which goes out (enqueued by the receipt)."""
    (outbox,) = live_settings.delivery.gateways
    failing = msgspec.structs.replace(
        outbox, options={**outbox.options, "undelivered_suffix": PHONE[-4:]}
    )
    settings = with_gateways(live_settings, failing)
    city = await make_key(live_db, "510100")
    async for client in live_client(settings, redis):
        original = await _post(client, county_key)
        copy = await _post(client, city)
    assert await _relying(live_db, copy)
    await run_worker(settings)  # the original goes, and its receipt says it never arrived
    assert await statuses(live_db, original) == {"undelivered": 1}
    await run_worker(settings)  # the heir's batch, enqueued as the receipt was recorded
    assert await statuses(live_db, copy) == {"undelivered": 1}  # the phone is still off
    sent = await live_db.fetch("SELECT text FROM outbox ORDER BY message_id")
    assert [r["text"] for r in sent] == [f"【锦江区】{BODY}", f"【成都市】{BODY}"]
    assert await _reservation(live_db, copy) == "posted"
    assert await _dedup_saved(live_db) == {}
    assert await audit_clean(live_db) == []


async def test_a_copy_made_while_its_original_awaits_its_receipt_relies_until_the_window_ends(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    """A gateway whose receipt never comes: the copy stays reserved and relying until the
    original's receipt window is over, then the sweeper settles it as if delivered."""
    city = await make_key(live_db, "510100")
    with running(AliyunFake()) as fake:  # it reports no receipts unless asked
        ali = fake.gateway(receipt_window_seconds=600)
        settings = with_gateways(live_settings, ali)
        async for client in live_client(settings, redis):
            original = await _post(client, county_key)
            await run_worker(settings)
            assert await statuses(live_db, original) == {"sent": 1}
            copy = await _post(client, city)
    assert await _relying(live_db, copy)
    assert await _reservation(live_db, copy) == "pending"
    db = _db(live_db)
    assert await delivery.decide(db, redis, settings.delivery) == {"decided": 0, "enqueued": 0}
    assert await _relying(live_db, copy)  # within the wait for a receipt

    await live_db.execute(
        "UPDATE messages SET sent_at = hub_now() - interval '601 seconds' WHERE send_id = $1",
        original,
    )
    assert await delivery.decide(db, redis, settings.delivery) == {"decided": 1, "enqueued": 0}
    assert not await _relying(live_db, copy)
    assert await statuses(live_db, copy) == {"deduplicated": 1}
    assert await _reservation(live_db, copy) == "voided"
    assert await _dedup_saved(live_db) == {"510100": 1}
    await delivery.sweep(db, redis, settings.delivery)
    assert await live_db.fetchval("SELECT state::text FROM sends WHERE id = $1", copy) == "done"
    assert await audit_clean(live_db) == []


async def test_copies_wait_for_the_receipt_of_an_original_closed_as_outcome_unknown(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    client: httpx.AsyncClient,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    """Its worker died while the outbox had the original: closed as "outcome unknown", never
    sent again. The outbox can be asked; it says undelivered, and the copy goes out instead."""
    city = await make_key(live_db, "510100")
    original = await _post(client, county_key)
    copy = await _post(client, city)
    await live_db.execute(
        "UPDATE messages SET status = 'sending', gateway = 'outbox', attempts = 1,"
        " submitted_at = hub_now() - interval '5 minutes',"
        " lease_until = hub_now() - interval '1 minute' WHERE send_id = $1",
        original,
    )
    await live_db.execute(  # the outbox took it (one it never took would simply go again)
        "INSERT INTO outbox (message_id, gateway, phone, sender, text, segments)"
        " SELECT id, 'outbox', phone, '10690000', 'x', segments FROM messages WHERE send_id = $1",
        original,
    )
    db = _db(live_db)
    assert (await delivery.sweep(db, redis, live_settings.delivery))["unknown"] == 1
    assert await _relying(live_db, copy)  # maybe delivered: the copy waits to know
    message = await live_db.fetchval("SELECT id FROM messages WHERE send_id = $1", original)
    recorder = delivery.Recorder(db, live_settings, redis)
    await live_db.execute(
        "UPDATE messages SET reference = $2 WHERE id = $1", message, f"outbox-{message}"
    )
    await hold_references(live_db, message)
    await recorder.receipts("outbox", [Receipt(f"outbox-{message}", "undelivered", "UNDELIV")])
    assert await statuses(live_db, original) == {"undelivered": 1}
    assert await statuses(live_db, copy) == {"accepted": 1}
    await run_worker()
    assert await statuses(live_db, copy) == {"delivered": 1}
    assert await audit_clean(live_db) == []


async def test_a_cancelled_originals_queued_heir_is_enqueued_when_the_cancel_commits(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    """The county is suspended: its scheduled notice is parked while the city's copy, due later,
    is released and relies on it. Cancelling the county's notice puts the copy on the queue at
    once (not at the sweeper's next round)."""
    month = next_period(current_period())
    await grant(
        live_db, {"000000": 10_000, "510000": 5_000, "510100": 3_000, "510104": 1_000}, month
    )
    original = await _post(
        client, county_key, send_at=(calendar.now() + timedelta(hours=1)).isoformat()
    )
    city = await make_key(live_db, "510100")
    copy = await _post(client, city, send_at=(calendar.now() + timedelta(hours=2)).isoformat())
    assert await _relying(live_db, copy)
    province = await make_key(live_db, "510000")
    suspended = await client.patch(
        "/v1/tenants/510104", json={"status": "suspended"}, headers=bearer(province)
    )
    assert suspended.status_code == 200, suspended.text
    await live_db.execute("UPDATE sends SET due_at = hub_now() - interval '1 second'")
    assert await messages.release_due(live_db) == [copy]  # the county's send stays
    assert await redis.zcard("arq:queue") == 0

    cancelled = await client.delete(f"/v1/messages/{original}", headers=bearer(province))
    assert cancelled.status_code == 204, cancelled.text
    assert await statuses(live_db, copy) == {"accepted": 1}
    assert await redis.zcard("arq:queue") == 1  # the heir's batch
    await run_worker()
    assert await statuses(live_db, copy) == {"delivered": 1}
    sent = await live_db.fetch("SELECT text FROM outbox")
    assert [r["text"] for r in sent] == [f"【成都市】{BODY}"]
    assert await audit_clean(live_db) == []


def _db(conn: asyncpg.Connection) -> SingleConnectionDatabase:
    return SingleConnectionDatabase(conn)


async def test_copies_due_later_outlast_an_original_presumed_delivered_and_go_if_it_missed(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    client: httpx.AsyncClient,
    county_key: str,
) -> None:
    """The original went 7 hours ago, past the validity period, and its receipt has not come
    (it still may: the outbox's receipt window is longer). A copy that came with it is settled
    as if delivered; one due 10 hours from now keeps relying, and when the receipt comes at
    last saying undelivered, it goes out itself."""
    validity = live_settings.delivery.validity_seconds
    (outbox,) = live_settings.delivery.gateways
    assert validity < 7 * 3600 < outbox.receipt_window_seconds
    month = next_period(current_period())  # 10 hours from now may be next month
    await grant(
        live_db, {"000000": 10_000, "510000": 5_000, "510100": 3_000, "510104": 1_000}, month
    )
    original = await _post(client, county_key, priority="urgent")
    alongside = await _post(client, await make_key(live_db, "510100"), priority="urgent")
    later = await _post(
        client,
        await make_key(live_db, "510000"),
        send_at=(calendar.now() + timedelta(hours=10)).isoformat(),
    )
    assert await _relying(live_db, alongside)
    assert await _relying(live_db, later)
    await _sent_7_hours_ago(live_db, original, "ref-7h")
    await live_db.execute(
        "UPDATE sends SET due_at = hub_now() - interval '7 hours' WHERE id = ANY($1::bigint[])",
        [original, alongside],
    )
    db = _db(live_db)
    await delivery.decide(db, redis, live_settings.delivery)
    assert not await _relying(live_db, alongside)  # could not go out itself any more
    assert await statuses(live_db, alongside) == {"deduplicated": 1}
    assert await _relying(live_db, later)  # still could: it waits for the receipt

    recorder = delivery.Recorder(db, live_settings, redis)
    await recorder.receipts("outbox", [Receipt("ref-7h", "undelivered", "UNDELIV")])
    assert await statuses(live_db, original) == {"undelivered": 1}
    assert await statuses(live_db, later) == {"accepted": 1}  # it goes when it is due
    assert await statuses(live_db, alongside) == {"deduplicated": 1}
    assert await audit_clean(live_db) == []


async def _went_in_its_place(conn: asyncpg.Connection, city: int, county: int) -> None:
    """The city's copy was delivered in place of the county's, which is settled against it:
    the phone got the notice once, from the city, and the ledger is clean."""
    assert await statuses(conn, city) == {"delivered": 1}
    assert await statuses(conn, county) == {"deduplicated": 1}
    assert not await _relying(conn, county)
    sent = await conn.fetch("SELECT text FROM outbox")
    assert [r["text"] for r in sent] == [f"【成都市】{BODY}"]
    assert await audit_clean(conn) == []


async def _suspend(client: httpx.AsyncClient, province: str, status: str) -> None:
    changed = await client.patch(
        "/v1/tenants/510104", json={"status": status}, headers=bearer(province)
    )
    assert changed.status_code == 200, changed.text


async def test_a_copy_takes_the_phone_from_a_suspended_countys_parked_message(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    client: httpx.AsyncClient,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    """The county's notice is parked by its suspension: the city's same notice does not rely
    on it (it could wait for weeks) but goes out, and the parked one relies on the city's; when
    the suspension ends, the county's notice is not sent a second time."""
    province = await make_key(live_db, "510000")
    original = await _post(client, county_key, priority="urgent")
    await _suspend(client, province, "suspended")
    jobs = {"db": _db(live_db), "settings": live_settings, "redis": redis}
    await message_jobs.release_due_sends(jobs)  # parks the county's send
    await redis.flushdb()  # its batch, enqueued before it was parked, would only find it parked
    assert await live_db.fetchval("SELECT parked_at IS NOT NULL FROM sends WHERE id = $1", original)
    copy = await client.post(
        "/v1/messages",
        json={"to": [PHONE], "body": BODY, "priority": "urgent"},
        headers=bearer(await make_key(live_db, "510100")),
    )
    assert copy.status_code == 202, copy.text
    assert copy.json()["counts"]["accepted"] == 1
    assert await _relying(live_db, original)

    await run_worker()
    await _went_in_its_place(live_db, copy.json()["id"], original)

    await _suspend(client, province, "active")
    await message_jobs.release_due_sends(jobs)  # unparks it: nothing left to send
    await run_worker()
    sent = await live_db.fetch("SELECT text FROM outbox")
    assert [r["text"] for r in sent] == [f"【成都市】{BODY}"]
    assert await audit_clean(live_db) == []


async def test_copies_relying_on_a_message_that_gets_parked_go_out_in_its_place(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    client: httpx.AsyncClient,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    """The city's copy relied on the county's notice, which then waits on the county's
    suspension: parking it hands the phone to the city's copy (enqueued at once), and the
    county's message relies on that one instead."""
    province = await make_key(live_db, "510000")
    original = await _post(client, county_key, priority="urgent")
    copy = await _post(client, await make_key(live_db, "510100"), priority="urgent")
    assert await _relying(live_db, copy)
    await _suspend(client, province, "suspended")
    await redis.flushdb()
    assert await messages.park_suspended(live_db) == 1  # parked by a pass that stopped there
    jobs = {"db": _db(live_db), "settings": live_settings, "redis": redis}
    await message_jobs.release_due_sends(jobs)  # the next pass looks at every parked message
    assert await statuses(live_db, copy) == {"accepted": 1}
    assert await _relying(live_db, original)
    assert await redis.zcard("arq:queue") == 1  # the heir's batch

    await run_worker()
    await _went_in_its_place(live_db, copy, original)


async def test_an_urgent_copy_is_not_held_behind_a_bulk_queue(
    live_db: asyncpg.Connection,
    client: httpx.AsyncClient,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    """The county's bulk notice is queued, not gone yet (its lane waits behind every normal and
    urgent batch): the city's urgent notice of the same text takes the phone and goes, the
    preview says so first, and the bulk copy relies on it."""
    bulk = await _post(client, county_key, priority="bulk")
    city = await make_key(live_db, "510100")
    urgent_request = {"to": [PHONE], "body": BODY, "priority": "urgent"}
    preview = await client.post("/v1/messages/preview", json=urgent_request, headers=bearer(city))
    assert preview.status_code == 200, preview.text
    assert preview.json()["counts"]["deduplicated"] == 0
    # A bulk copy would rely on it: only a faster lane takes the phone.
    same_lane = await client.post(
        "/v1/messages/preview", json={**urgent_request, "priority": "bulk"}, headers=bearer(city)
    )
    assert same_lane.status_code == 200, same_lane.text
    assert same_lane.json()["counts"]["deduplicated"] == 1
    urgent = await client.post("/v1/messages", json=urgent_request, headers=bearer(city))
    assert urgent.status_code == 202, urgent.text
    assert urgent.json()["counts"]["accepted"] == 1
    assert await _relying(live_db, bulk)

    await run_worker()
    await _went_in_its_place(live_db, urgent.json()["id"], bulk)


async def test_a_copy_due_later_does_not_take_the_phone_from_a_queued_bulk_one(
    live_db: asyncpg.Connection, client: httpx.AsyncClient, county_key: str
) -> None:
    """The lane rule is for copies due now: an urgent notice scheduled for two hours ahead
    relies on the bulk copy queued now, which goes first."""
    month = next_period(current_period())  # two hours from now may be next month
    await grant(
        live_db, {"000000": 10_000, "510000": 5_000, "510100": 3_000, "510104": 1_000}, month
    )
    bulk = await _post(client, county_key, priority="bulk")
    later = await _post(
        client,
        await make_key(live_db, "510100"),
        priority="urgent",
        send_at=(calendar.now() + timedelta(hours=2)).isoformat(),
    )
    assert await _relying(live_db, later)
    assert await statuses(live_db, bulk) == {"accepted": 1}


async def test_a_parked_copy_outlasts_an_original_presumed_delivered(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    client: httpx.AsyncClient,
    county_key: str,
) -> None:
    """A parked copy's validity starts when it is unparked: its due time long past does not
    settle it against an original only presumed delivered."""
    original = await _post(client, county_key, priority="urgent")
    copy = await _post(client, await make_key(live_db, "510100"), priority="urgent")
    await _sent_7_hours_ago(live_db, original, "ref-p")
    await live_db.execute(  # the city was suspended 7 hours ago, its copy parked since
        "UPDATE sends SET due_at = hub_now() - interval '7 hours',"
        " parked_at = CASE WHEN id = $2 THEN hub_now() - interval '7 hours' END"
        " WHERE id = ANY($1::bigint[])",
        [original, copy],
        copy,
    )
    await delivery.decide(_db(live_db), redis, live_settings.delivery)
    assert await _relying(live_db, copy)
