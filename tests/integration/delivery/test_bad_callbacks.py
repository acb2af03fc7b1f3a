"""A gateway's batch with one bad item stores the good ones and reports the bad one; it never
fails the batch (the gateway would only push it all again, the bad item with it)."""

from __future__ import annotations

import logging

import asyncpg
import httpx
import msgspec
import pytest

from hub.settings import GatewayConfig, Settings
from tests.integration.delivery.conftest import SECRET, with_gateways

ALI = GatewayConfig(
    name="ali",
    kind="aliyun",
    secret=SECRET,
    username="id",
    password="key",
    options={"template_code": "SMS_1", "sign_name": "锦江区委组织部"},
)
ACK = {"code": 0, "msg": "接收成功"}


@pytest.fixture
def live_settings(live_settings: Settings) -> Settings:
    return with_gateways(live_settings, *live_settings.delivery.gateways, ALI)


@pytest.fixture
async def extension(live_db: asyncpg.Connection, county_key: str) -> str:
    return str(await live_db.fetchval("SELECT sms_extension FROM tenants WHERE code = '510104'"))


def _reply(extension: str, sequence: int, **fields: object) -> dict[str, object]:
    return {
        "phone_number": "13800138000",
        "content": "收到",
        "dest_code": extension,
        "sequence_id": sequence,
        **fields,
    }


async def _push(client: httpx.AsyncClient, kind: str, body: bytes) -> httpx.Response:
    return await client.post(
        f"/v1/gateways/ali/{kind}",
        content=body,
        headers={"X-Hub-Gateway-Secret": SECRET, "Content-Type": "application/json"},
    )


async def test_one_bad_reply_does_not_fail_the_batch(
    live_db: asyncpg.Connection,
    client: httpx.AsyncClient,
    extension: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    batch = [
        _reply(extension, 1),
        {"content": 1},  # not a reply at all
        _reply(extension, 3, content="收\x00到"),  # PostgreSQL cannot store NUL
        _reply(extension, 4, phone_number="1380013\x008001"),
        _reply(extension, 5, content="退订"),
        "garbage",
    ]
    with caplog.at_level(logging.WARNING, logger="hub.delivery"):
        resp = await _push(client, "inbound", msgspec.json.encode(batch))
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert {k: answer[k] for k in ACK} == ACK  # acknowledged: the good ones are not pushed again
    assert [r["index"] for r in answer["rejected"]] == [1, 2, 3, 5]  # each bad one named
    stored = await live_db.fetch("SELECT reference, text FROM inbound ORDER BY reference")
    assert [(r["reference"], r["text"]) for r in stored] == [("1", "收到"), ("5", "退订")]
    report = " ".join(r.getMessage() for r in caplog.records)
    assert "gateway ali: inbound item 1 refused: 'Expected `str`, got `int`" in report
    assert "gateway ali: inbound item 2 refused: 'text holds a NUL character'" in report
    assert "gateway ali: inbound item 5 refused: 'Expected `object`, got `str`'" in report


async def test_one_bad_receipt_does_not_fail_the_batch(
    client: httpx.AsyncClient, extension: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"phone_number": "13800138000", "success": True, "biz_id": "b1"}
    batch = [good, {**good, "biz_id": "b\x002"}, {"success": "maybe"}]
    with caplog.at_level(logging.WARNING, logger="hub.delivery"):
        resp = await _push(client, "receipts", msgspec.json.encode(batch))
    assert resp.status_code == 200, resp.text
    assert [r["index"] for r in resp.json()["rejected"]] == [1, 2]
    report = " ".join(r.getMessage() for r in caplog.records)
    assert "gateway ali: receipts item 1 refused: \"reference 'b\\\\x002" in report
    assert "gateway ali: receipts item 2 refused: 'Expected `bool`, got `str`" in report


@pytest.mark.parametrize(
    "body", [b"{}", b"not json", b"[" * 100_000 + b"]" * 100_000], ids=["object", "text", "deep"]
)
async def test_a_push_that_is_no_batch_at_all_is_400(
    client: httpx.AsyncClient, extension: str, body: bytes
) -> None:
    resp = await _push(client, "inbound", body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "bad_callback"
