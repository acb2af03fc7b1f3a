"""Per-recipient text: {姓名} (or a roster's free field, {职务}) filled in from each
recipient's roster entry, through POST /v1/messages, its preview, dedup, quota and delivery."""

from __future__ import annotations

import asyncpg
import httpx
from arq.connections import ArqRedis

from hub.messages.segments import count_segments
from tests.factories import bearer, make_key
from tests.integration.delivery.conftest import RunWorker, audit_clean, statuses

ROSTER = (
    "姓名,手机,标签,职务\n"
    "张三,13800138000,书记,支部书记\n"
    "李四,18612345678,书记,\n"  # no 职务
    "欧阳长名字同志代表,13311112222,书记,组织委员\n"
)
NOTICE = (
    "{姓名}同志：请于本周五下午三点准时到县委三楼第一会议室参加全县基层组织工作推进会，"
    "请带好笔记本和相关材料，回复1确认参会"
)


async def _import(client: httpx.AsyncClient, key: str, roster: str = ROSTER) -> None:
    answer = await client.post("/v1/contacts/import", content=roster.encode(), headers=bearer(key))
    assert answer.status_code == 200, answer.text
    assert answer.json()["rejected"] == []


async def _signature(conn: asyncpg.Connection, code: str = "510104") -> str:
    signature: str = await conn.fetchval("SELECT signature FROM tenants WHERE code = $1", code)
    return signature


async def test_each_recipient_reads_their_own_name(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    await _import(client, county_key)
    request = {"to_tags": ["书记"], "to": ["19212345678"], "body": NOTICE}
    preview = await client.post("/v1/messages/preview", json=request, headers=bearer(county_key))
    assert preview.status_code == 200, preview.text
    sent = await client.post("/v1/messages", json=request, headers=bearer(county_key))
    assert sent.status_code == 202, sent.text
    answer, seen = sent.json(), preview.json()
    # 19212345678 is not in the roster: it has no 姓名, and is rejected on its own.
    assert answer["rejected"] == [{"to": "+8619212345678", "reason": "missing_value"}]
    assert answer["counts"]["accepted"] == 3
    signature = await _signature(live_db)
    texts = {
        phone: f"【{signature}】{name}{NOTICE.removeprefix('{姓名}')}"
        for phone, name in (
            ("+8613800138000", "张三"),
            ("+8618612345678", "李四"),
            ("+8613311112222", "欧阳长名字同志代表"),
        )
    }
    each = {phone: count_segments(text).count for phone, text in texts.items()}
    assert sorted(each.values()) == [1, 1, 2]  # the long name takes a second segment
    assert answer["segments"] == sum(each.values()) == 4
    assert answer["segments_per_message"] == 2
    # The preview said the same, and showed what a recipient reads.
    for field in ("counts", "rejected", "segments", "segments_per_message", "list_price_micros"):
        assert seen[field] == answer[field], field
    assert seen["text"].endswith(NOTICE)
    assert seen["example"] in texts.values()
    reserved = await live_db.fetchval("SELECT amount FROM quota_reservations")
    assert reserved == 4

    worker = await run_worker()
    assert worker.jobs_failed == 0
    assert await statuses(live_db, answer["id"]) == {"delivered": 3}
    outbox = {r["phone"]: r["text"] for r in await live_db.fetch("SELECT phone, text FROM outbox")}
    assert outbox == texts
    assert await live_db.fetchval("SELECT used_part FROM quota_reservations") == 4
    listed = await client.get(f"/v1/messages/{answer['id']}/recipients", headers=bearer(county_key))
    assert {(m["phone"], m["name"]) for m in listed.json()["items"]} == {
        ("+8613800138000", "张三"),
        ("+8618612345678", "李四"),
        ("+8613311112222", "欧阳长名字同志代表"),
    }
    assert await audit_clean(live_db) == []


async def test_a_field_some_contacts_lack_rejects_only_them(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str
) -> None:
    await _import(client, county_key)
    sent = await client.post(
        "/v1/messages",
        json={"to_tags": ["书记"], "body": "{职务}{姓名}：明早八点开会"},
        headers=bearer(county_key),
    )
    assert sent.status_code == 202, sent.text
    assert sent.json()["rejected"] == [{"to": "+8618612345678", "reason": "missing_value"}]
    bodies = {
        r["phone"]: r["body"]
        for r in await live_db.fetch("SELECT phone, body FROM messages ORDER BY phone")
    }
    assert bodies == {
        "+8613311112222": "组织委员欧阳长名字同志代表：明早八点开会",
        "+8613800138000": "支部书记张三：明早八点开会",
    }


async def test_a_placeholder_no_recipient_can_fill_is_refused_naming_it(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str
) -> None:
    await _import(client, county_key)
    for request in (
        {"to_tags": ["书记"], "body": "{地点}开会"},
        {"to": ["13900001111"], "body": "{姓名}同志好"},  # not in the roster at all
    ):
        refused = await client.post("/v1/messages", json=request, headers=bearer(county_key))
        assert refused.status_code == 422, refused.text
        assert refused.json()["fields"][0]["key"] == "body"
        assert "{" in refused.json()["detail"]
    assert await live_db.fetchval("SELECT count(*) FROM sends") == 0


async def test_a_template_takes_what_vars_leave_from_the_roster(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str
) -> None:
    await _import(client, county_key)
    province = await make_key(live_db, "000000")
    made = await client.post(
        "/v1/templates",
        json={"name": "会议通知", "body": "{姓名}同志：请于{时间}到{地点}开会"},
        headers=bearer(province),
    )
    assert made.status_code == 201, made.text
    template = made.json()["id"]
    sent = await client.post(
        "/v1/messages",
        json={
            "to": ["13800138000"],
            "template": template,
            "vars": {"时间": "周五下午三点", "地点": "三楼"},
        },
        headers=bearer(county_key),
    )
    assert sent.status_code == 202, sent.text
    body = await live_db.fetchval("SELECT body FROM messages")
    assert body == "张三同志：请于周五下午三点到三楼开会"
    missing = await client.post(
        "/v1/messages",
        json={"to": ["13800138000"], "template": template, "vars": {"时间": "周五"}},
        headers=bearer(county_key),
    )
    assert missing.status_code == 422
    assert [f["key"] for f in missing.json()["fields"]] == ["vars.地点"]


async def test_personal_texts_dedup_within_their_tenant_only(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str
) -> None:
    """The same personal notice twice reaches each phone once. Another county's copy, even of
    the very same text, is never a duplicate of it: its `deduplicated` would confirm a guess of
    the name 锦江区's roster holds for the phone (the preview costs nothing to ask)."""
    await _import(client, county_key)
    request = {"to_tags": ["书记"], "body": NOTICE}
    first = await client.post("/v1/messages", json=request, headers=bearer(county_key))
    again = await client.post("/v1/messages", json=request, headers=bearer(county_key))
    assert again.json()["counts"]["deduplicated"] == first.json()["counts"]["accepted"] == 3
    qingyang = await make_key(live_db, "510105")
    await _import(
        client, qingyang, "姓名,手机,标签\n张三丰,13800138000,书记\n李四,18612345678,书记\n"
    )
    guess = {"to": ["18612345678"], "body": NOTICE.replace("{姓名}", "李四")}
    previewed = await client.post("/v1/messages/preview", json=guess, headers=bearer(qingyang))
    assert previewed.json()["counts"]["deduplicated"] == 0
    other = await client.post("/v1/messages", json=request, headers=bearer(qingyang))
    # 李四 reads the same text from either county; each county's goes.
    assert other.json()["counts"] == {
        "accepted": 2,
        "deduplicated": 0,
        "opted_out": 0,
        "rejected": 0,
        "repeated": 0,
    }


async def test_a_name_that_makes_the_text_too_long_rejects_that_recipient(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str
) -> None:
    long_name = "长" * 100
    await _import(
        client, county_key, f"姓名,手机,标签\n{long_name},13800138000,书记\n王五,13900001111,书记\n"
    )
    body = "{姓名}" + "通知" * 200  # 400 characters besides the name
    sent = await client.post(
        "/v1/messages", json={"to_tags": ["书记"], "body": body}, headers=bearer(county_key)
    )
    assert sent.status_code == 202, sent.text
    assert sent.json()["rejected"] == [{"to": "+8613800138000", "reason": "too_long"}]
    assert sent.json()["counts"]["accepted"] == 1


async def test_values_given_with_the_send_go_over_the_roster(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str
) -> None:
    await _import(client, county_key)
    sent = await client.post(
        "/v1/messages",
        json={
            "to": ["13800138000", "+86 139 0000 1111", "12345"],
            "body": "{姓名}同志：{地点}开会",
            "values": {
                "139 0000 1111": {"姓名": "赵六", "地点": "二楼"},
                "13800138000": {"地点": "三楼"},  # 姓名 from the roster: 张三
                "12345": {"姓名": "无效号码"},
            },
        },
        headers=bearer(county_key),
    )
    assert sent.status_code == 202, sent.text
    assert sent.json()["rejected"] == [{"to": "12345", "reason": "invalid"}]
    bodies = {
        r["phone"]: r["body"] for r in await live_db.fetch("SELECT phone, body FROM messages")
    }
    assert bodies == {
        "+8613800138000": "张三同志：三楼开会",
        "+8613900001111": "赵六同志：二楼开会",
    }
    refused = await client.post(
        "/v1/messages",
        json={
            "to": ["13800138000"],
            "body": "{姓名}",
            "values": {"13800138000": {"姓名": "a\x01"}},
        },
        headers=bearer(county_key),
    )
    assert refused.status_code == 422


async def test_a_value_with_brackets_or_control_characters_is_refused_for_its_recipient(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str
) -> None:
    """A roster's names and fields may hold 【】; filled into a text they would show the phone a
    second, forged signature."""
    await _import(
        client,
        county_key,
        "姓名,手机,标签,职务\n】【国务院办公厅】紧急通知【,13800138000,书记,书记\n"
        "李四,18612345678,书记,【中共中央组织部】\n王五,13311112222,书记,委员\n",
    )
    sent = await client.post(
        "/v1/messages",
        json={"to_tags": ["书记"], "body": "{姓名}{职务}：明早八点开会"},
        headers=bearer(county_key),
    )
    assert sent.status_code == 202, sent.text
    assert sorted(r["to"] for r in sent.json()["rejected"] if r["reason"] == "unfit_value") == [
        "+8613800138000",
        "+8618612345678",
    ]
    assert await live_db.fetchval("SELECT array_agg(body) FROM messages") == [
        "王五委员：明早八点开会"
    ]


async def test_a_province_fills_names_from_its_units_rosters_but_not_their_fields(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str
) -> None:
    await _import(client, county_key)  # 锦江区's roster, with 职务
    city = await make_key(live_db, "510100")
    named = await client.post(
        "/v1/messages/preview",
        json={"to_tags": ["书记"], "subtree": True, "body": "{姓名}同志：明早八点开会"},
        headers=bearer(city),
    )
    assert named.status_code == 200, named.text
    assert named.json()["counts"]["accepted"] == 3
    fields = await client.post(
        "/v1/messages/preview",
        json={"to": ["13800138000"], "subtree": True, "body": "{职务}：明早八点开会"},
        headers=bearer(city),
    )
    assert fields.status_code == 422  # a unit's own columns are not for the city to read back
    assert "{职务}" in fields.json()["detail"]


async def test_a_reminder_of_a_personal_send_repeats_each_phones_own_text(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str
) -> None:
    """The values a send was given are not kept (a roster file's, say): its reminder and resend
    send each phone the text its message had."""
    sent = await client.post(
        "/v1/messages",
        json={
            "to": ["13800138000", "18612345678"],
            "body": "{姓名}同志：明早八点开会，回复1确认",
            "values": {"13800138000": {"姓名": "张三"}, "18612345678": {"姓名": "李四"}},
            "reply_wanted": True,
        },
        headers=bearer(county_key),
    )
    assert sent.status_code == 202, sent.text
    reminded = await client.post(
        f"/v1/messages/{sent.json()['id']}/remind", json={}, headers=bearer(county_key)
    )
    assert reminded.status_code == 202, reminded.text
    bodies = await live_db.fetch(
        "SELECT phone, body FROM messages WHERE send_id = $1 ORDER BY phone", reminded.json()["id"]
    )
    assert [(r["phone"], r["body"]) for r in bodies] == [
        ("+8613800138000", "提醒：张三同志：明早八点开会，回复1确认"),
        ("+8618612345678", "提醒：李四同志：明早八点开会，回复1确认"),
    ]
    # A reminder with a text of its own is filled from the roster as any send (none here).
    own = await client.post(
        f"/v1/messages/{sent.json()['id']}/remind",
        json={"body": "{姓名}同志：请尽快回复"},
        headers=bearer(county_key),
    )
    assert own.status_code == 422
