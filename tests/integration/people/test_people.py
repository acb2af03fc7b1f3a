"""A person's data: the operator's lookup of a phone across tenants, its erasure from every
table, and what an erased phone means afterwards (opted out everywhere, refused by rosters)."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub.db import SingleConnectionDatabase
from hub.delivery import repository as delivery_sql
from hub.delivery.gateway import Receipt
from hub.delivery.service import Recorder
from hub.oplog import service as oplog
from hub.people import service as people
from hub.settings import GatewayConfig, PeopleSettings, Settings
from tenants.scopes import Role
from tenants.service import get_by_code
from tests.factories import bearer
from tests.integration.people.conftest import OTHER, PHONE, SECRET, Keys
from tests.integration.users.conftest import SAME_ORIGIN, make_user, signed_in

NATIONAL = PHONE[3:]  # 13800138000: how the phone appears in any text that quotes it


async def _roster(client: httpx.AsyncClient, key: str, rows: list[tuple[str, str]]) -> Any:
    csv = "姓名,手机,标签\n" + "".join(f"{name},{phone},书记\n" for name, phone in rows)
    response = await client.post(
        "/v1/contacts/import",
        content=csv.encode(),
        headers={**bearer(key), "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    return response.json()


async def _send(client: httpx.AsyncClient, key: str, to: list[str], body: str, **more: Any) -> Any:
    response = await client.post(
        "/v1/messages", json={"to": to, "body": body, **more}, headers=bearer(key)
    )
    assert response.status_code == 202, response.text
    return response.json()


async def _tenant_id(conn: asyncpg.Connection, code: str) -> int:
    tenant = await get_by_code(conn, code)
    assert tenant is not None
    return tenant.id


async def _reply(conn: asyncpg.Connection, code: str, phone: str, text: str) -> int:
    reply_id: int = await conn.fetchval(
        "INSERT INTO inbound (tenant_id, gateway, reference, phone, address, text, opt_out,"
        " received_at) VALUES ($1, 'outbox', $2, $3, '10690001', $4, false, hub_now())"
        " RETURNING id",
        await _tenant_id(conn, code),
        f"reply-{phone}-{code}",
        phone,
        text,
    )
    return reply_id


async def _messages_to(conn: asyncpg.Connection, send_id: int, phones: list[str]) -> list[int]:
    """The ids of the send's messages to `phones`, in that order."""
    return [
        await conn.fetchval(
            "SELECT id FROM messages WHERE send_id = $1 AND phone = $2", send_id, phone
        )
        for phone in phones
    ]


async def _in_savepoint(conn: asyncpg.Connection, script: str) -> None:
    async with conn.transaction():
        await conn.execute(script)


async def _lookup(client: httpx.AsyncClient, key: str, **body: Any) -> httpx.Response:
    return await client.post("/v1/people/lookup", json=body, headers=bearer(key))


def _hashed(phone: str) -> str:
    return "phone:" + people.phone_hash(SECRET, phone).hex()


async def test_lookup_finds_the_phone_across_tenants_and_is_logged_without_it(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: Keys
) -> None:
    await _roster(client, keys.jinjiang, [("张三", PHONE), ("李四", OTHER)])
    await _roster(client, keys.qingyang, [("张三丰", NATIONAL)])
    first = await _send(client, keys.jinjiang, [PHONE, OTHER], "今晚七点开会")
    second = await _send(client, keys.qingyang, ["138 0013 8000"], "明早九点学习")
    await _send(client, keys.guizhou, [OTHER], "与此人无关")
    await conn.execute(
        "INSERT INTO opt_outs (tenant_id, phone) VALUES ($1, $2)",
        await _tenant_id(conn, "510105"),
        PHONE,
    )
    await _reply(conn, "510104", PHONE, "收到，准时参加")

    response = await _lookup(client, keys.root, phone="138-0013-8000")
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["phone"] == PHONE
    assert data["erased"] is False
    assert [(m["tenant"], m["send_id"], m["status"]) for m in data["messages"]] == [
        ("510104", first["id"], "accepted"),
        ("510105", second["id"], "accepted"),
    ]
    assert data["messages"][0]["text"].endswith("】今晚七点开会")
    assert data["messages"][0]["sender"].startswith("key:")
    assert data["next_after"] is None
    assert sorted((c["tenant"], c["name"]) for c in data["contacts"]) == [
        ("510104", "张三"),
        ("510105", "张三丰"),
    ]
    assert [o["tenant"] for o in data["opt_outs"]] == ["510105"]
    assert [(r["tenant"], r["text"]) for r in data["replies"]] == [("510104", "收到，准时参加")]

    # Pages of messages, keyset on the message id.
    page = (await _lookup(client, keys.root, phone=PHONE, limit=1)).json()
    assert [m["send_id"] for m in page["messages"]] == [first["id"]]
    after = page["next_after"]
    assert after == page["messages"][0]["id"]
    rest = (await _lookup(client, keys.root, phone=PHONE, limit=1, after=after)).json()
    assert [m["send_id"] for m in rest["messages"]] == [second["id"]]
    assert rest["next_after"] is None

    # Each lookup is logged under the phone's HMAC, never the phone itself.
    logged = await conn.fetch(
        "SELECT t.code, o.actor, o.object, concat_ws(' ', o.object, o.detail::text) AS text"
        " FROM operation_log o JOIN tenants t ON t.id = o.tenant_id"
        " WHERE o.action = 'person.lookup' ORDER BY o.id"
    )
    assert len(logged) == 3
    assert {(r["code"], r["object"]) for r in logged} == {("000000", _hashed(PHONE))}
    assert all(r["actor"].startswith("key:") for r in logged)
    assert not any(NATIONAL in r["text"] for r in logged)


async def test_only_the_operator_with_tenants_write_may_look_up_or_erase(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: Keys
) -> None:
    await _roster(client, keys.jinjiang, [("张三", PHONE)])
    for key in [keys.jinjiang, keys.guizhou, keys.root_reader]:
        looked = await _lookup(client, key, phone=PHONE)
        assert looked.status_code == 403, looked.text
        assert looked.json()["error"] == "forbidden"
        erased = await client.post(
            "/v1/people/erase", json={"phone": PHONE, "reason": "试试"}, headers=bearer(key)
        )
        assert erased.status_code == 403, erased.text
    # Nothing was erased, kept or logged.
    assert await conn.fetchval("SELECT count(*) FROM contacts WHERE phone = $1", PHONE) == 1
    assert await conn.fetchval("SELECT count(*) FROM erased_phones") == 0
    assert (
        await conn.fetchval("SELECT count(*) FROM operation_log WHERE action LIKE 'person.%'") == 0
    )


@pytest.mark.parametrize(
    "phone", ["abc", "1380013800\x000", "\x00", "", "1" * 65, "12345", "13800138000" * 100]
)
async def test_a_bad_phone_is_422(client: httpx.AsyncClient, keys: Keys, phone: str) -> None:
    looked = await _lookup(client, keys.root, phone=phone)
    assert looked.status_code == 422, looked.text
    assert looked.json()["error"] == "invalid"
    erased = await client.post(
        "/v1/people/erase", json={"phone": phone, "reason": "x"}, headers=bearer(keys.root)
    )
    assert erased.status_code == 422, erased.text


async def test_bad_bodies_are_clear_4xx(client: httpx.AsyncClient, keys: Keys) -> None:
    root = bearer(keys.root)
    nul_reason = await client.post(
        "/v1/people/erase", json={"phone": PHONE, "reason": "a\x00b"}, headers=root
    )
    assert nul_reason.status_code == 422
    unknown = await client.post("/v1/people/lookup", json={"phone": PHONE, "x": 1}, headers=root)
    assert unknown.status_code == 422
    garbled = await client.post(
        "/v1/people/lookup",
        content=b'{"phone": ',
        headers={**root, "Content-Type": "application/json"},
    )
    assert garbled.status_code == 400
    no_reason = await client.post("/v1/people/erase", json={"phone": PHONE}, headers=root)
    assert no_reason.status_code == 422
    # A reason that names the phone (in any spacing) would keep it: refused, nothing erased.
    national = PHONE.removeprefix("+86")
    spaced = f"本人({national[:3]}-{national[3:7]} {national[7:]})来电要求删除"
    naming = await client.post(
        "/v1/people/erase", json={"phone": PHONE, "reason": spaced}, headers=root
    )
    assert naming.status_code == 422, naming.text
    assert naming.json()["fields"][0]["key"] == "reason"


async def test_without_the_operators_secret_nothing_is_looked_up(
    conn: asyncpg.Connection, keys: Keys
) -> None:
    root = await get_by_code(conn, "000000")
    assert root is not None
    from hub.people.schemas import PersonQuery
    from tenants.service import authenticate

    who = await authenticate(conn, keys.root)
    assert who is not None
    with pytest.raises(people.NoSecret) as refused:
        await people.lookup(conn, who, PersonQuery(phone=PHONE), PeopleSettings())
    assert refused.value.status_code == 503


async def _tag_counts_hold(conn: asyncpg.Connection) -> None:
    kept = await conn.fetch("SELECT tenant_id, tag, contacts FROM contact_tags WHERE contacts > 0")
    counted = await conn.fetch(
        "SELECT tenant_id, tag, count(*) AS contacts FROM contacts, unnest(tags) AS tag"
        " GROUP BY tenant_id, tag"
    )
    assert sorted(map(tuple, kept)) == sorted(map(tuple, counted))


async def test_erasure_removes_the_phone_everywhere_and_keeps_it_opted_out(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: Keys
) -> None:
    jinjiang, qingyang = await _tenant_id(conn, "510104"), await _tenant_id(conn, "510105")
    await _roster(client, keys.jinjiang, [("张三", PHONE), ("李四", OTHER)])
    await _roster(client, keys.qingyang, [("张三丰", PHONE)])
    # A roster that deleted the phone itself: the operation log holds its name and phone.
    await _roster(client, keys.guizhou, [("张三", PHONE)])
    gone = await conn.fetchval(
        "SELECT id FROM contacts WHERE phone = $1 AND tenant_id <> ALL($2)",
        PHONE,
        [jinjiang, qingyang],
    )
    deleted = await client.delete(f"/v1/contacts/{gone}", headers=bearer(keys.guizhou))
    assert deleted.status_code == 204, deleted.text
    first = await _send(client, keys.jinjiang, [PHONE, OTHER], "今晚七点开会", reply_wanted=True)
    waiting = await _send(client, keys.qingyang, [PHONE], "明早九点学习")
    mine, others = await _messages_to(conn, first["id"], [PHONE, OTHER])
    # The first went (a reference, a receipt not matched yet, the outbox's copy); the other waits.
    await conn.execute(
        "UPDATE messages SET status = 'sent', gateway = 'outbox', reference = 'ref-1'"
        " WHERE id = $1",
        mine,
    )
    await conn.execute(
        "INSERT INTO unmatched_receipts (gateway, reference, status, code)"
        " VALUES ('outbox', 'ref-1', 'delivered', 'DELIVRD'), ('outbox', 'ref-2', 'delivered', '')"
    )
    await conn.execute(
        "INSERT INTO outbox (message_id, gateway, phone, sender, text, segments)"
        " VALUES ($1, 'outbox', $2, '10690001', '【锦江区】今晚七点开会', 1)",
        mine,
        PHONE,
    )
    reply = await _reply(conn, "510104", PHONE, "收到")
    await _reply(conn, "510104", OTHER, "我也收到")
    await conn.execute(
        "INSERT INTO webhook_deliveries (tenant_id, inbound_id) VALUES ($1, $2)", jinjiang, reply
    )
    await conn.execute("INSERT INTO opt_outs (tenant_id, phone) VALUES ($1, $2)", qingyang, PHONE)
    await conn.execute(
        "INSERT INTO resubscriptions (tenant_id, phone, opted_out_at, reason, actor)"
        " VALUES ($1, $2, hub_now(), '本人来电', 'key:x')",
        qingyang,
        PHONE,
    )
    await conn.execute(
        "UPDATE sends SET rejects = $2::jsonb WHERE id = $1",
        first["id"],
        '[{"to": "138-0013-8000 ", "reason": "invalid"}, {"to": "12345", "reason": "invalid"}]',
    )
    await conn.execute(
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status_code, response,"
        " expires_at) VALUES ($1, 'k1', '\\x00', 202, $2, hub_now() + interval '1 day'),"
        " ($1, 'k2', '\\x00', 202, $3, hub_now() + interval '1 day')",
        jinjiang,
        b'{"rejected": [{"to": "138 0013 8000", "reason": "invalid"}]}',
        b'{"rejected": [{"to": "12345", "reason": "invalid"}]}',
    )
    assert await conn.fetchval("SELECT count(*) FROM dedup_keys WHERE message_id = $1", mine) == 1
    await _tag_counts_hold(conn)

    response = await client.post(
        "/v1/people/erase",
        json={"phone": "138 0013 8000", "reason": "本人来函要求删除"},
        headers=bearer(keys.root),
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["phone_hash"] == people.phone_hash(SECRET, PHONE).hex()
    counts = answer["counts"]
    assert {k: v for k, v in counts.items() if v} == {
        "contacts": 2,
        "messages": 2,
        "dedup_keys": 2,
        "reply_waits": 1,
        "unmatched_receipts": 1,
        "outbox": 1,
        "inbound": 1,
        "webhook_deliveries": 1,
        "opt_outs": 1,
        "resubscriptions": 1,
        "idempotency_keys": 1,
        "sends.rejects": 1,
        "operation_log": 1,
    }

    # Gone from every table that held it…
    for table in [
        "contacts",
        "messages",
        "inbound",
        "outbox",
        "opt_outs",
        "resubscriptions",
        "reply_waits",
        "user_codes",
    ]:
        assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE phone = $1", PHONE) == 0
    erased = await conn.fetch(
        "SELECT id, status::text AS status, body, error FROM messages WHERE phone IS NULL"
        " ORDER BY id"
    )
    assert [(r["status"], r["body"], r["error"]) for r in erased] == [
        ("sent", None, None),
        ("cancelled", None, None),  # it was still waiting: it never goes
    ]
    assert await conn.fetchval("SELECT count(*) FROM dedup_keys WHERE message_id = $1", mine) == 0
    assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
    assert await conn.fetchval(
        "SELECT array_agg(reference ORDER BY reference) FROM unmatched_receipts"
    ) == ["ref-2"]
    assert await conn.fetchval("SELECT rejects::text FROM sends WHERE id = $1", first["id"]) == (
        '[{"to": "12345", "reason": "invalid"}]'
    )
    assert await conn.fetchval("SELECT array_agg(key) FROM idempotency_keys") == ["k2"]
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM operation_log WHERE concat_ws(' ', object, before::text,"
            " after::text, detail::text) LIKE '%' || $1 || '%'",
            NATIONAL,
        )
        == 0
    )
    redacted = await conn.fetchrow(
        "SELECT before::text AS before, redacted_at FROM operation_log"
        " WHERE action = 'contacts.delete'"
    )
    assert redacted is not None
    assert redacted["before"] == '{"erased": true}'
    assert redacted["redacted_at"] is not None
    # …its waiting message's segments went back to the county's quota…
    assert (
        await conn.fetchval(
            "SELECT status::text FROM quota_reservations WHERE cause = $1", f"send:{waiting['id']}"
        )
        == "voided"
    )
    # …and everyone else's data stayed.
    assert await conn.fetchval("SELECT count(*) FROM contacts WHERE phone = $1", OTHER) == 1
    assert await conn.fetchval("SELECT phone FROM messages WHERE id = $1", others) == OTHER
    assert await conn.fetchval("SELECT count(*) FROM dedup_keys WHERE message_id = $1", others) == 1
    assert await conn.fetchval("SELECT count(*) FROM inbound WHERE phone = $1", OTHER) == 1
    assert await conn.fetchval("SELECT count(*) FROM reply_waits WHERE phone = $1", OTHER) == 1
    await _tag_counts_hold(conn)
    # The erasure is logged with its counts and reason, under the hash only.
    logged = await conn.fetchrow(
        "SELECT object, detail::text AS detail FROM operation_log WHERE action = 'person.erase'"
    )
    assert logged is not None
    assert logged["object"] == _hashed(PHONE)
    assert "本人来函要求删除" in logged["detail"]
    assert NATIONAL not in logged["detail"]

    # The phone is kept only as its HMAC: no tenant's send reaches it any more…
    assert [bytes(r["hash"]) for r in await conn.fetch("SELECT hash FROM erased_phones")] == [
        people.phone_hash(SECRET, PHONE)
    ]
    later = await _send(client, keys.guizhou, [PHONE, OTHER], "新的通知")
    assert later["counts"]["opted_out"] == 1
    assert later["counts"]["accepted"] == 1
    written = await conn.fetch(
        "SELECT phone, status::text AS status FROM messages WHERE send_id = $1 ORDER BY phone",
        later["id"],
    )
    assert [tuple(r) for r in written] == [(OTHER, "accepted"), (None, "opted_out")]
    # …no roster takes it back…
    again = await _roster(client, keys.jinjiang, [("张三", PHONE)])
    assert (again["created"], again["updated"]) == (0, 0)
    assert [p["reason"] for p in again["rejected"]] == ["phone was erased at its owner's request"]
    assert await conn.fetchval("SELECT count(*) FROM contacts WHERE phone = $1", PHONE) == 0
    # …and the send's recipients show the erased phone as null.
    listed = await client.get(
        f"/v1/messages/{first['id']}/recipients", headers=bearer(keys.jinjiang)
    )
    assert sorted((m["phone"] or "") for m in listed.json()["items"]) == ["", OTHER]
    looked = (await _lookup(client, keys.root, phone=PHONE)).json()
    assert (looked["erased"], looked["messages"], looked["contacts"]) == (True, [], [])


async def test_erasure_takes_the_phone_out_of_a_gateways_references(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: Keys
) -> None:
    """Alibaba's reference is `BizId:<phone>`: the erased message's reference (on the message
    and in message_references) and receipts found for no message that quote the phone go;
    another phone's, and a reference that only holds the digits inside a longer number, stay."""
    sent = await _send(client, keys.jinjiang, [PHONE, OTHER], "今晚七点开会")
    mine, others = await _messages_to(conn, sent["id"], [PHONE, OTHER])
    for message, phone in ((mine, NATIONAL), (others, OTHER[3:])):
        await conn.execute(
            "UPDATE messages SET status = 'sent', gateway = 'aliyun', reference = $2,"
            " sent_at = hub_now() WHERE id = $1",
            message,
            f"BIZ1:{phone}",
        )
        await conn.execute(
            "INSERT INTO message_references (message_id, gateway, reference)"
            " VALUES ($1, 'aliyun', $2)",
            message,
            f"BIZ1:{phone}",
        )
    # Receipts that found no message: one for the phone, one for the other, one whose number
    # only holds the phone's digits (a reference is matched as a whole number, not a substring).
    quoting = [f"BIZ0:{NATIONAL}", f"BIZ0:{OTHER[3:]}", f"BIZ0:9{NATIONAL}"]
    for reference in quoting:
        await conn.execute(
            "INSERT INTO unmatched_receipts (gateway, reference, status, code)"
            " VALUES ('aliyun', $1, 'delivered', 'DELIVRD')",
            reference,
        )

    response = await client.post(
        "/v1/people/erase",
        json={"phone": PHONE, "reason": "本人来函要求删除"},
        headers=bearer(keys.root),
    )
    assert response.status_code == 200, response.text
    assert response.json()["counts"]["unmatched_receipts"] == 1

    held = {
        r["message_id"]: r["reference"]
        for r in await conn.fetch("SELECT message_id, reference FROM message_references")
    }
    assert held == {mine: f"erased:{mine}", others: f"BIZ1:{OTHER[3:]}"}
    assert await conn.fetchval("SELECT reference FROM messages WHERE id = $1", mine) == (
        f"erased:{mine}"
    )
    assert await conn.fetchval("SELECT reference FROM messages WHERE id = $1", others) == (
        f"BIZ1:{OTHER[3:]}"
    )
    assert sorted(r["reference"] for r in await conn.fetch("SELECT * FROM unmatched_receipts")) == [
        f"BIZ0:{OTHER[3:]}",
        f"BIZ0:9{NATIONAL}",
    ]
    found = await conn.fetchval(
        "SELECT count(*) FROM message_references WHERE strpos(reference, $1) > 0", NATIONAL
    )
    assert found == 0


async def test_a_late_receipt_quoting_an_erased_phone_is_not_kept(
    conn: asyncpg.Connection,
    client: httpx.AsyncClient,
    keys: Keys,
    settings: Settings,
    redis: ArqRedis,
) -> None:
    """Alibaba may report on a message after its phone was erased: the receipt matches nothing
    (the erasure rewrote the message's reference), and kept as unmatched it would hold the phone
    again. Another phone's receipt that matches nothing yet is kept, as always."""
    erased = await client.post(
        "/v1/people/erase", json={"phone": PHONE, "reason": "本人要求"}, headers=bearer(keys.root)
    )
    assert erased.status_code == 200, erased.text
    aliyun = GatewayConfig(
        name="aliyun", kind="aliyun", username="id", password="secret", secret="callback"
    )
    delivery = msgspec.structs.replace(settings.delivery, gateways=[aliyun])
    recorder = Recorder(
        SingleConnectionDatabase(conn), msgspec.structs.replace(settings, delivery=delivery), redis
    )
    late = [f"BIZ2:{NATIONAL}", f"BIZ2:{OTHER[3:]}", f"BIZ2:9{NATIONAL}"]
    await recorder.receipts("aliyun", [Receipt(r, "delivered", "DELIVRD") for r in late])
    kept = await conn.fetch("SELECT reference FROM unmatched_receipts ORDER BY reference")
    assert [r["reference"] for r in kept] == [f"BIZ2:{OTHER[3:]}", f"BIZ2:9{NATIONAL}"]


async def test_a_message_erased_while_it_is_being_sent_keeps_no_reference_to_the_phone(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: Keys
) -> None:
    """The erasure leaves a message being sent (`sending`) to finish without its phone: the
    gateway's answer, Alibaba's `BizId:<phone>`, is recorded as `erased:<id>`, on the message
    and in message_references. Another message's reference is recorded as given."""
    sent = await _send(client, keys.jinjiang, [PHONE, OTHER], "今晚七点开会")
    ids = await _messages_to(conn, sent["id"], [PHONE, OTHER])
    await conn.execute(
        "UPDATE messages SET status = 'sending', gateway = 'aliyun', attempts = 1"
        " WHERE id = ANY($1::bigint[])",
        ids,
    )
    erased = await client.post(
        "/v1/people/erase", json={"phone": PHONE, "reason": "本人要求"}, headers=bearer(keys.root)
    )
    assert erased.status_code == 200, erased.text
    answered = [f"BIZ1:{NATIONAL}", f"BIZ1:{OTHER[3:]}"]
    await conn.execute(
        delivery_sql.RECORD_SENT, ids, answered, [1, 1], ["", ""], [0, 0], min(ids), max(ids)
    )
    rows = await conn.fetch(
        "SELECT m.id, m.status::text AS status, m.reference, h.reference AS held"
        " FROM messages m JOIN message_references h ON h.message_id = m.id ORDER BY m.id"
    )
    assert [(r["status"], r["reference"], r["held"]) for r in rows] == [
        ("sent", f"erased:{ids[0]}", f"erased:{ids[0]}"),
        ("sent", answered[1], answered[1]),
    ]


async def test_the_log_refuses_updates_but_a_redaction(
    conn: asyncpg.Connection, keys: Keys
) -> None:
    """Migration 0040's one exception to the append-only log: a redaction, in a transaction
    that says so, changing only what an entry says (never who, when or what action)."""
    await oplog.record(
        conn,
        "system:test",
        "contacts.delete",
        tenant_id=await _tenant_id(conn, "510104"),
        detail={"phone": PHONE},
    )
    entry = await conn.fetchval("SELECT max(id) FROM operation_log")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with conn.transaction():
            await conn.execute(
                "UPDATE operation_log SET detail = NULL, redacted_at = hub_now() WHERE id = $1",
                entry,
            )
    redacting = "SET LOCAL hub.redacting = 'on'; "
    for other in [
        "UPDATE operation_log SET actor = 'user:someone', redacted_at = hub_now() WHERE id = ",
        "DELETE FROM operation_log WHERE id = ",
    ]:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _in_savepoint(conn, redacting + other + str(entry))
    async with conn.transaction():
        await conn.execute("SET LOCAL hub.redacting = 'on'")
        await conn.execute(
            "UPDATE operation_log SET detail = NULL, redacted_at = hub_now() WHERE id = $1", entry
        )


async def test_rotating_the_secret_keeps_matching_only_with_the_old_one_kept(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: Keys
) -> None:
    erased = await client.post(
        "/v1/people/erase", json={"phone": PHONE, "reason": "本人申请"}, headers=bearer(keys.root)
    )
    assert erased.status_code == 200, erased.text
    kept = PeopleSettings(secret="a-new-secret", previous_secrets=[SECRET])
    assert await people.erased_among(conn, kept, [PHONE, OTHER]) == {PHONE}
    # Rotated without the old secret: the erased phone no longer matches (docs/DATA.md).
    lost = PeopleSettings(secret="a-new-secret")
    assert await people.erased_among(conn, lost, [PHONE, OTHER]) == set()
    # Without any secret while erased phones are kept, a send fails closed (503), not open.
    with pytest.raises(people.NoSecret):
        await people.erased_among(conn, PeopleSettings(), [OTHER])


async def test_the_consoles_roster_preview_flags_an_erased_phone(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: Keys
) -> None:
    erased = await client.post(
        "/v1/people/erase", json={"phone": PHONE, "reason": "本人申请"}, headers=bearer(keys.root)
    )
    assert erased.status_code == 200, erased.text
    await make_user(conn, "510104", "sender", {Role.SEND}, phone="13700137000")
    await signed_in(client, conn, "sender", phone="+8613700137000")
    roster = f"姓名,手机\n张三,{NATIONAL}\n李四,{OTHER}\n"
    upload = {"file": ("roster.csv", roster.encode(), "text/csv")}
    preview = await client.post("/dashboard/contacts/import", files=upload, headers=SAME_ORIGIN)
    assert preview.status_code == 200, preview.text
    problems = re.search(r'<table class="data" id="problems">(.*?)</table>', preview.text, re.S)
    assert problems is not None
    assert re.findall(r'data-line="(\d+)"', problems[1]) == ["2"]
    assert "此号码已应本人要求删除" in problems[1]
