"""Anniversary greetings: every day at its send time, each contact whose anniversary it is gets
the campaign's template with {name} and {years}, once per year whatever reruns (29 February
joiners are greeted on 28 February in common years).

A run goes campaign by campaign and, within one, a batch of contacts at a time (`greet_batch`,
keyset on the contact id). A batch's greetings are one send with each phone's own text (its
`values`, hub.messages.personal), and `campaign_deliveries` is written in the same transaction.
The job commits each batch before it takes the next, so a batch's quota reservation holds the
tenant's quota rows for one batch at most, never for the whole run (the tenant's own API sends
wait for one batch at most), and a run stopped anywhere resumes where its last commit left it,
greeting nobody twice.

When the batch's send cannot be made (quota short for all of it, a template withdrawn) or a
concurrent run greeted some of it first, its greetings go one send each, in a savepoint of their
own: one that cannot go is rolled back alone and tried again on the next run. A contact the
send rejects on its own (a name that cannot be filled in) is not greeted either: the next run
tries again.
"""

from __future__ import annotations

import calendar
import logging
from datetime import date, datetime

import asyncpg
import msgspec

from hub.calendar import BUSINESS_TZ
from hub.campaigns import repository as sql
from hub.campaigns.repository import DueCampaign
from hub.campaigns.schemas import Campaign, CreateCampaign
from hub.errors import ApiError, NotFound
from hub.messages import service as messages
from hub.messages.schedule import clock
from hub.messages.schemas import SendRequest
from hub.oplog import service as oplog
from hub.settings import Settings
from hub.signatures import service as signatures
from hub.templates import service as templates
from tenants import service as tenants
from tenants.repository import TenantRow
from tenants.service import Principal

log = logging.getLogger("hub.campaigns")

# Greetings per transaction. Each reserves quota, so a batch holds the tenant's quota rows until
# it commits: small enough that the tenant's API sends never wait long behind it, large enough
# that a 10,000-contact morning is not 10,000 commits.
BATCH = 50


class _NotGreeted(Exception):
    """A concurrent run greeted one of these contacts first, or none of them could be sent to:
    undo our send."""


class Batch(msgspec.Struct, frozen=True):
    """What one batch did: the contacts it greeted, the sends that carry them, and the last
    contact it looked at (None: no contact was left to look at, the campaign is done for
    today)."""

    greeted: int
    sends: list[int]
    last_contact: int | None


def _campaign(record: asyncpg.Record) -> Campaign:
    return msgspec.convert(dict(record.items()), Campaign)


async def create(
    conn: asyncpg.Connection, who: Principal, tenant: TenantRow, data: CreateCampaign
) -> Campaign:
    """A campaign of `tenant` (the caller's own); logged as `campaign.create`."""
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
        who.actor,
    )
    assert record is not None
    created = _campaign(record)
    await oplog.record(
        conn,
        who,
        "campaign.create",
        tenant_id=tenant.id,
        object=f"campaign:{created.id}",
        after=created,
    )
    return created


async def list_campaigns(conn: asyncpg.Connection, tenant: TenantRow) -> list[Campaign]:
    return [_campaign(r) for r in await conn.fetch(sql.OF_TENANT, tenant.id)]


async def stop(
    conn: asyncpg.Connection, who: Principal, tenant: TenantRow, campaign_id: int
) -> None:
    """Stop a campaign of `tenant`; logged as `campaign.stop`."""
    if await conn.fetchval(sql.STOP, campaign_id, tenant.id) is None:
        raise NotFound("campaign not found")
    await oplog.record(
        conn, who, "campaign.stop", tenant_id=tenant.id, object=f"campaign:{campaign_id}"
    )


async def _greet(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    campaign: DueCampaign,
    contacts: list[asyncpg.Record],
    year: int,
    settings: Settings,
    now: datetime,
) -> tuple[int, int] | None:
    """One send greeting `contacts`, each by its own text: the send and how many it greeted
    (a recipient it rejects, say a name that cannot be filled in, is not greeted: the next run
    tries again). None when it could not be made, greeted nobody, or a concurrent run greeted
    one of them first (nothing is left of it then)."""
    request = SendRequest(
        to=[c["phone"] for c in contacts],
        template=campaign.template_id,
        values={c["phone"]: {"name": c["name"], "years": str(c["years"])} for c in contacts},
    )
    try:
        async with conn.transaction():
            actor = f"campaign:{campaign.id}"
            sent = await messages.create_send(conn, tenant, actor, request, settings, now)
            await oplog.record(
                conn, f"system:{actor}", "send.create", **messages.send_logged(tenant, sent)
            )
            rejected = {r.to for r in sent.rejected}
            ids = [c["id"] for c in contacts if c["phone"] not in rejected]
            claimed = await conn.fetchval(sql.CLAIM, campaign.id, ids, year, sent.id) if ids else 0
            if not ids or claimed < len(ids):
                raise _NotGreeted
    except _NotGreeted:
        return None
    except ApiError as exc:  # quota exhausted, template withdrawn…: next run tries again
        log.warning(
            "campaign %s could not greet contacts %s…: %s",
            campaign.id,
            contacts[0]["id"],
            exc.detail,
        )
        return None
    return sent.id, len(ids)


def _anniversary(now: datetime) -> tuple[date, bool]:
    """Today in Asia/Shanghai, and whether 29 February joiners are greeted today."""
    today = now.astimezone(BUSINESS_TZ).date()
    return today, (today.month, today.day) == (2, 28) and not calendar.isleap(today.year)


async def due(conn: asyncpg.Connection, now: datetime) -> list[DueCampaign]:
    """Active campaigns whose send time has come today."""
    local = now.astimezone(BUSINESS_TZ).time().replace(tzinfo=None)
    return [msgspec.convert(dict(r.items()), DueCampaign) for r in await conn.fetch(sql.DUE, local)]


async def greet_batch(
    conn: asyncpg.Connection,
    settings: Settings,
    campaign: DueCampaign,
    now: datetime,
    *,
    after: int = 0,
    limit: int = BATCH,
) -> Batch:
    """Greet the next `limit` of the campaign's contacts celebrating today after contact
    `after` (those greeted this year already are passed over); the sends made and where the
    next batch starts."""
    tenant = await tenants.get_by_id(conn, campaign.tenant_id)
    if tenant is None:
        return Batch(greeted=0, sends=[], last_contact=None)
    today, leap_day_joiners = _anniversary(now)
    contacts = await conn.fetch(
        sql.CELEBRATING,
        tenant.id,
        today.month,
        today.day,
        leap_day_joiners,
        today.year,
        campaign.to_tags,
        campaign.id,
        after,
        limit,
    )
    waiting = [c for c in contacts if not c["greeted"]]
    last = contacts[-1]["id"] if len(contacts) == limit else None
    if not waiting:
        return Batch(greeted=0, sends=[], last_contact=last)
    together = await _greet(conn, tenant, campaign, waiting, today.year, settings, now)
    if together is not None:
        return Batch(greeted=together[1], sends=[together[0]], last_contact=last)
    sends = []
    for contact in waiting:  # one by one: those that can go, go
        alone = await _greet(conn, tenant, campaign, [contact], today.year, settings, now)
        if alone is not None:
            sends.append(alone[0])
    return Batch(greeted=len(sends), sends=sends, last_contact=last)
