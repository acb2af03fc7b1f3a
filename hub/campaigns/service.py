"""Anniversary greetings: every day at its send time, each contact whose anniversary it is gets
the campaign's template with {name} and {years}, once per year whatever reruns (29 February
joiners are greeted on 28 February in common years).

Each greeting is a send of its own (the text is personal) in a savepoint: one that cannot go
(quota exhausted…) is rolled back alone and tried again on the next run.
"""

from __future__ import annotations

import calendar
import logging
from datetime import datetime

import asyncpg
import msgspec

from hub.calendar import BUSINESS_TZ
from hub.campaigns import repository as sql
from hub.campaigns.schemas import Campaign, CreateCampaign
from hub.errors import ApiError, NotFound
from hub.messages import service as messages
from hub.messages.schedule import clock
from hub.messages.schemas import SendRequest
from hub.settings import Settings
from hub.signatures import service as signatures
from hub.templates import service as templates
from tenants import service as tenants
from tenants.repository import TenantRow

log = logging.getLogger("hub.campaigns")


class _AlreadyGreeted(Exception):
    """A concurrent run greeted this contact first: undo our send."""


def _campaign(record: asyncpg.Record) -> Campaign:
    return msgspec.convert(dict(record.items()), Campaign)


async def create(
    conn: asyncpg.Connection, tenant: TenantRow, data: CreateCampaign, actor: str
) -> Campaign:
    # Each greeting is a send: refused now, not on the day, if they could not go.
    await signatures.for_sending(conn, tenant)
    await templates.sendable(conn, tenants.ancestry_paths(tenant.path), data.template)
    record = await conn.fetchrow(
        sql.INSERT,
        tenant.id,
        data.kind,
        data.field,
        data.template,
        clock(data.send_time),
        data.to_tags,
        actor,
    )
    assert record is not None
    return _campaign(record)


async def list_campaigns(conn: asyncpg.Connection, tenant: TenantRow) -> list[Campaign]:
    return [_campaign(r) for r in await conn.fetch(sql.OF_TENANT, tenant.id)]


async def stop(conn: asyncpg.Connection, tenant: TenantRow, campaign_id: int) -> None:
    if await conn.fetchval(sql.STOP, campaign_id, tenant.id) is None:
        raise NotFound("campaign not found")


async def _greet(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    campaign: asyncpg.Record,
    contact: asyncpg.Record,
    year: int,
    settings: Settings,
    now: datetime,
) -> bool:
    request = SendRequest(
        to=[contact["phone"]],
        template=campaign["template_id"],
        vars={"name": contact["name"], "years": str(contact["years"])},
    )
    try:
        async with conn.transaction():
            sent = await messages.create_send(
                conn, tenant, f"campaign:{campaign['id']}", request, settings, now
            )
            claimed = await conn.fetchval(sql.CLAIM, campaign["id"], contact["id"], year, sent.id)
            if claimed is None:
                raise _AlreadyGreeted
    except _AlreadyGreeted:
        return False
    except ApiError as exc:  # quota exhausted, template withdrawn…: next run tries again
        log.warning(
            "campaign %s could not greet contact %s: %s", campaign["id"], contact["id"], exc.detail
        )
        return False
    return True


async def run_due(conn: asyncpg.Connection, settings: Settings, now: datetime) -> int:
    """Greet everyone whose anniversary is today in campaigns whose time has come; how many."""
    local = now.astimezone(BUSINESS_TZ)
    today = local.date()
    leap_day_joiners = (today.month, today.day) == (2, 28) and not calendar.isleap(today.year)
    greeted = 0
    for campaign in await conn.fetch(sql.DUE, local.time().replace(tzinfo=None)):
        tenant = await tenants.get_by_id(conn, campaign["tenant_id"])
        if tenant is None:
            continue
        contacts = await conn.fetch(
            sql.CELEBRATING,
            tenant.id,
            today.month,
            today.day,
            leap_day_joiners,
            today.year,
            campaign["to_tags"],
            campaign["id"],
        )
        for contact in contacts:
            greeted += await _greet(conn, tenant, campaign, contact, today.year, settings, now)
    return greeted
