"""Archive fixtures: notices of February 2027 (a month the tests close) and of March (the
pinned clock's month, open), made through the messages service and then dated by hand: the
clock is pinned in March, and a closed month needs notices in the past."""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg
import msgspec

from hub.billing import service as billing
from hub.messages import service as messages
from hub.messages.schemas import SendRequest
from hub.settings import Settings
from tenants import service as tenants
from tests.factories import grant_ahead, make_small_tree

FEBRUARY = date(2027, 2, 1)
# 10:00 on 10 February 2027 in Beijing.
FEB_10 = datetime(2027, 2, 10, 2, 0, tzinfo=UTC)
NOTICE = "同志：请于周五下午三点到三楼会议室开会，回复1确认参会"
PHONES = ["13800138001", "13900139002", "18612345674"]


class Month(msgspec.Struct, frozen=True):
    notice: int  # 锦江区's February notice: delivered to two, one undelivered, one reply
    unit_notice: int  # 春熙路街道's (a unit below 锦江区) February notice
    march: int  # 锦江区's March notice (the open month)


async def send(
    conn: asyncpg.Connection, settings: Settings, code: str, body: str, phones: list[str]
) -> int:
    tenant = await tenants.get_by_code(conn, code)
    assert tenant is not None
    request = SendRequest(to=list[str | int](phones), body=body)
    return (await messages.create_send(conn, tenant, "user:jj.sender", request, settings)).id


async def date_send(conn: asyncpg.Connection, send_id: int, at: datetime) -> None:
    await conn.execute("UPDATE sends SET created_at = $2, due_at = $2 WHERE id = $1", send_id, at)


async def receipt(
    conn: asyncpg.Connection, send_id: int, phone: str, status: str, at: datetime
) -> None:
    """A message of the send went at `at` and reached `status` a minute later."""
    await conn.execute(
        "UPDATE messages SET status = $3::message_status, sent_at = $4,"
        " done_at = $4::timestamptz + interval '1 minute' WHERE send_id = $1 AND phone = $2",
        send_id,
        "+86" + phone,
        status,
        at,
    )


async def reply(
    conn: asyncpg.Connection, send_id: int, phone: str, text: str, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO inbound (tenant_id, gateway, reference, phone, address, text, opt_out,"
        " received_at, send_id)"
        " SELECT tenant_id, 'outbox', '', $2, '10690000000001', $3, false, $4, id"
        " FROM sends WHERE id = $1",
        send_id,
        "+86" + phone,
        text,
        at,
    )


async def close(conn: asyncpg.Connection, month: date) -> None:
    """Close `month`'s billing period as if its grace window had passed."""
    await billing.close_period(
        conn,
        month,
        "test",
        grace_days=3,
        default_list_price=60_000,
        now=datetime(2027, 6, 1, tzinfo=UTC),
    )


async def make_month(conn: asyncpg.Connection, settings: Settings) -> Month:
    """The small tree with quota; February's two notices (dated, delivered, replied to,
    approved) and March's one; February not closed yet."""
    await make_small_tree(conn)
    await grant_ahead(
        conn, {"000000": 1_000, "510000": 500, "510100": 200, "510104": 100, "510104001": 10}
    )
    notice = await send(conn, settings, "510104", NOTICE, PHONES)
    await date_send(conn, notice, FEB_10)
    await conn.execute(
        "UPDATE sends SET approved_by = 'user:jj.reviewer', approved_at = $2 WHERE id = $1",
        notice,
        FEB_10,
    )
    await receipt(conn, notice, PHONES[0], "delivered", FEB_10)
    await receipt(conn, notice, PHONES[1], "delivered", FEB_10)
    await receipt(conn, notice, PHONES[2], "undelivered", FEB_10)
    await reply(conn, notice, PHONES[0], "1 收到，准时参加", FEB_10)
    unit_notice = await send(conn, settings, "510104001", "=街道通知：明天上午九点集合", PHONES[:1])
    await date_send(conn, unit_notice, FEB_10)
    march = await send(conn, settings, "510104", "三月通知：周三学习", PHONES[:2])
    return Month(notice=notice, unit_notice=unit_notice, march=march)
