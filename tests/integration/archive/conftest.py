"""Archive fixtures: notices of the month before the clock's (a month the tests close:
February 2027 under the pinned clock, November 2026 at 23:30 on 31 December, January 2028 on
29 February) and one of the clock's own month (open), made through the messages service; the
closed month's are then dated by hand, since a closed month needs notices in the past.

Every month and instant here comes from the hub's clock (`hub.calendar`, business months in
Asia/Shanghai), read when this module is imported, never from a calendar date written down."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import asyncpg
import msgspec

from hub import calendar
from hub.billing import service as billing
from hub.messages import service as messages
from hub.messages.schemas import SendRequest
from hub.settings import Settings
from tenants import service as tenants
from tests.factories import grant_ahead, make_small_tree

# The month the tests close: the one before the clock's (December of the year before, in
# January).
CLOSED = calendar.previous_period(calendar.current_period())
# 10:00 on its 10th, Beijing time: when its notices went.
CLOSED_10 = calendar.day_start(CLOSED.replace(day=10)) + timedelta(hours=10)
# How long after its month a period may be closed (`billing.close_period`'s grace window).
GRACE_DAYS = 3
NOTICE = "同志：请于周五下午三点到三楼会议室开会，回复1确认参会"
PHONES = ["13800138001", "13900139002", "18612345674"]


class Month(msgspec.Struct, frozen=True):
    notice: int  # 锦江区's notice of CLOSED: delivered to two, one undelivered, one reply
    unit_notice: int  # 春熙路街道's (a unit below 锦江区) notice of CLOSED
    current: int  # 锦江区's notice made at the clock's time (under the pinned clock, in March)
    # The month `current` is due in, open: the clock's, or the next one when the send was made
    # in quiet hours on a month's last evening and waits for the morning.
    open_month: date


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


def closable(month: date) -> datetime:
    """The first instant `month` may be closed: its grace window after its last day."""
    return calendar.day_start(calendar.next_period(month)) + timedelta(days=GRACE_DAYS)


async def close(conn: asyncpg.Connection, month: date) -> None:
    """Close `month`'s billing period as if its grace window had passed (an hour after)."""
    await billing.close_period(
        conn,
        month,
        "test",
        grace_days=GRACE_DAYS,
        default_list_price=60_000,
        now=closable(month) + timedelta(hours=1),
    )


async def make_month(conn: asyncpg.Connection, settings: Settings) -> Month:
    """The small tree with quota; CLOSED's two notices (dated, delivered, replied to,
    approved) and one made now, in the open month; CLOSED not closed yet."""
    await make_small_tree(conn)
    await grant_ahead(
        conn, {"000000": 1_000, "510000": 500, "510100": 200, "510104": 100, "510104001": 10}
    )
    notice = await send(conn, settings, "510104", NOTICE, PHONES)
    await date_send(conn, notice, CLOSED_10)
    await conn.execute(
        "UPDATE sends SET approved_by = 'user:jj.reviewer', approved_at = $2 WHERE id = $1",
        notice,
        CLOSED_10,
    )
    await receipt(conn, notice, PHONES[0], "delivered", CLOSED_10)
    await receipt(conn, notice, PHONES[1], "delivered", CLOSED_10)
    await receipt(conn, notice, PHONES[2], "undelivered", CLOSED_10)
    await reply(conn, notice, PHONES[0], "1 收到，准时参加", CLOSED_10)
    unit_notice = await send(conn, settings, "510104001", "=街道通知：明天上午九点集合", PHONES[:1])
    await date_send(conn, unit_notice, CLOSED_10)
    current = await send(conn, settings, "510104", "本月通知：周三学习", PHONES[:2])
    due: datetime = await conn.fetchval("SELECT due_at FROM sends WHERE id = $1", current)
    open_month = calendar.period_of(due)
    assert open_month > CLOSED
    return Month(notice=notice, unit_notice=unit_notice, current=current, open_month=open_month)
