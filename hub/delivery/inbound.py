"""Replies: routed to a tenant by the address they were sent to, stored once, opt-outs noted,
and queued for the tenant's webhook."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg
import msgspec

from hub.delivery import repository as sql
from hub.delivery.gateway import Inbound
from hub.delivery.schemas import OptOut, RecentReply
from hub.messages.numbers import Recipient, normalize
from hub.settings import DeliverySettings

log = logging.getLogger(__name__)

EXTENSION_DIGITS = 6  # tenants' SMS extensions are fixed-width (migration 0001)
OPT_OUT_WORDS = frozenset({"T", "TD", "N", "退订", "取消"})


def is_opt_out(text: str) -> bool:
    return text.strip().upper() in OPT_OUT_WORDS


def extension_of(address: str, service_number: str) -> str | None:
    """The tenant extension in `<service number><extension>[more]`, or None. A bare extension
    is taken as it is: Alibaba reports a reply's `dest_code`, the extension code the hub sent
    with the message, without any number in front."""
    digits = address.lstrip("+")
    if len(digits) == EXTENSION_DIGITS and digits.isdigit():
        return digits
    if not digits.startswith(service_number):
        return None
    extension = digits[len(service_number) : len(service_number) + EXTENSION_DIGITS]
    return extension if len(extension) == EXTENSION_DIGITS else None


async def store(
    conn: asyncpg.Connection, settings: DeliverySettings, gateway: str, replies: Sequence[Inbound]
) -> list[int]:
    """Store replies (a repeat of a gateway reference is stored once), link each to the send it
    answers (LINK_REPLIES, the batch at once); returns the new ids, for which webhook
    deliveries have been queued."""
    stored: list[int] = []
    for reply in replies:
        extension = extension_of(reply.to, settings.service_number)
        tenant_id = await conn.fetchval(sql.TENANT_BY_EXTENSION, extension) if extension else None
        if tenant_id is None:
            log.warning("gateway %s: reply to %s matches no tenant; dropped", gateway, reply.to)
            continue
        number = normalize(reply.phone)
        phone = number.phone if isinstance(number, Recipient) else reply.phone
        opt_out = is_opt_out(reply.text)
        inbound_id = await conn.fetchval(
            sql.INSERT_INBOUND,
            tenant_id,
            gateway,
            reply.reference,
            phone,
            reply.to,
            reply.text,
            opt_out,
            reply.at,
        )
        if inbound_id is None:
            continue  # the gateway told us twice
        if opt_out:
            await conn.execute(sql.OPT_OUT, tenant_id, phone)
        stored.append(inbound_id)
    if stored:
        # Linked before their webhook pushes are queued, so a push names the send it answers.
        await conn.execute(sql.LINK_REPLIES, stored, settings.reply_window_seconds)
        await conn.execute(sql.QUEUE_WEBHOOKS, stored)
    return stored


async def recent_replies(conn: asyncpg.Connection, tenant_id: int, limit: int) -> list[RecentReply]:
    """Replies to a tenant, newest first."""
    records = await conn.fetch(sql.RECENT_INBOUND, tenant_id, limit)
    return [msgspec.convert(dict(r.items()), RecentReply) for r in records]


async def opt_outs(
    conn: asyncpg.Connection, tenant_id: int, limit: int
) -> tuple[list[OptOut], int]:
    """The latest phones that opted out of a tenant's messages, and how many there are."""
    records = await conn.fetch(sql.OPT_OUTS, tenant_id, limit)
    count = int(await conn.fetchval(sql.OPT_OUT_COUNT, tenant_id) or 0)
    return [msgspec.convert(dict(r.items()), OptOut) for r in records], count
