"""Billing: rate cards (the operator's), checked before they are stored; usage facts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import asyncpg
import msgspec

from hub.billing import pricing
from hub.billing import repository as sql
from hub.billing.schemas import (
    CarrierCost,
    CarrierRate,
    CloseSummary,
    LevelTotals,
    RateCard,
    RateCardIn,
    Statement,
    StatementLine,
    TenantCarrierUsage,
    TenantUsage,
    Totals,
    UsageView,
)
from hub.errors import Conflict, Forbidden, Invalid, NotFound
from hub.quota.schemas import BUSINESS_TZ
from tenants.service import ROOT_CODE, Principal


def require_operator(who: Principal) -> None:
    """Rate cards and the period close are the hub operator's (the root tenant's keys)."""
    if who.tenant_code != ROOT_CODE:
        raise Forbidden("only the hub operator (the root tenant) manages billing")


def _card(record: asyncpg.Record) -> RateCard:
    row: dict[str, Any] = dict(record.items())
    row["bands"] = msgspec.json.decode(row["bands"])
    return msgspec.convert(row, RateCard)


async def add_card(conn: asyncpg.Connection, card: RateCardIn, actor: str) -> RateCard:
    """Store a rate card; 422 naming every problem with its bands or date, 409 if the carrier
    already has a card from that month."""
    found = pricing.problems(card.bands)
    if card.valid_from.day != 1:
        found.append(f"valid_from must be the first day of a month, not {card.valid_from}")
    if not found:
        await ensure_open(conn, card.valid_from)
    if found:
        raise Invalid(
            "invalid rate card: " + "; ".join(found),
            fields=[{"key": "bands", "message": problem, "source": "body"} for problem in found],
        )
    record = await conn.fetchrow(
        sql.INSERT_CARD,
        card.carrier,
        card.valid_from,
        card.mode,
        msgspec.json.encode(card.bands).decode(),
        card.list_price_micros,
        actor,
    )
    if record is None:
        raise Conflict(
            f"{card.carrier} already has a rate card from {card.valid_from} (dates would overlap)"
        )
    return _card(record)


async def list_cards(conn: asyncpg.Connection, carrier: str | None) -> list[RateCard]:
    return [_card(r) for r in await conn.fetch(sql.CARDS, carrier)]


async def card_in_force(conn: asyncpg.Connection, carrier: str, month: date) -> RateCard | None:
    record = await conn.fetchrow(sql.CARD_IN_FORCE, carrier, month)
    return None if record is None else _card(record)


UsageKind = Literal["billable", "dedup"]


async def record_usage(
    conn: asyncpg.Connection, kind: UsageKind, segments: Mapping[tuple[int, str], int]
) -> None:
    """Note segments that became billable (or were saved by dedup) today, per (tenant id,
    carrier). Appended, never updated in place: callers sit on delivery's hot path."""
    live = [(t, c, n) for (t, c), n in segments.items() if n > 0]
    if live:
        tenants, carriers, counts = (list(column) for column in zip(*live, strict=True))
        await conn.execute(sql.RECORD_USAGE, kind, tenants, carriers, counts)


async def roll_up(conn: asyncpg.Connection, batch: int = 10_000) -> int:
    """Fold usage entries into the daily rollup; how many rows of the rollup changed."""
    status: str = await conn.execute(sql.ROLL_UP, batch)
    return int(status.split()[-1])


class CarrierUsage(msgspec.Struct, frozen=True):
    tenant: str
    carrier: str
    billable: int
    dedup: int


async def usage(
    conn: asyncpg.Connection, tenant_path: str, month: date, *, subtree: bool
) -> list[CarrierUsage]:
    """The month's billable and deduplicated segments per tenant and carrier."""
    records = await conn.fetch(sql.USAGE, tenant_path, month, _month_after(month), subtree)
    return [msgspec.convert(dict(r.items()), CarrierUsage) for r in records]


def _share(total: int, part: int, whole: int) -> int:
    """total * part / whole, rounded half up, in integers."""
    return (2 * total * part + whole) // (2 * whole) if whole else 0


async def _rates(
    conn: asyncpg.Connection, month: date, end: date, default_list_price: int
) -> dict[str, CarrierRate]:
    rates: dict[str, CarrierRate] = {}
    for r in await conn.fetch(sql.HUB_VOLUME, month, end):
        carrier, volume = r["carrier"], r["segments"]
        card = await card_in_force(conn, carrier, month)
        list_price = card.list_price_micros if card else default_list_price
        cost = pricing.cost(card.mode, card.bands, volume) if card else volume * list_price
        rates[carrier] = CarrierRate(carrier, volume, cost, card.id if card else None, list_price)
    return rates


async def estimate(
    conn: asyncpg.Connection,
    tenant_path: str,
    month: date,
    *,
    subtree: bool,
    default_list_price: int,
) -> UsageView:
    """The running estimate: each tenant's segments at the month's blended rates so far."""
    end = _month_after(month)
    rates = await _rates(conn, month, end, default_list_price)
    per_tenant: dict[str, list[CarrierUsage]] = {}
    for row in await usage(conn, tenant_path, month, subtree=subtree):
        per_tenant.setdefault(row.tenant, []).append(row)
    items = []
    for tenant, rows in per_tenant.items():
        carriers, cost, listed, saved = [], 0, 0, 0
        for row in rows:
            rate = rates.get(row.carrier)
            hub_cost, hub_volume = (rate.hub_cost_micros, rate.hub_segments) if rate else (0, 0)
            price = rate.list_price_micros if rate else default_list_price
            share = _share(hub_cost, row.billable, hub_volume)
            carriers.append(TenantCarrierUsage(row.carrier, row.billable, share))
            cost += share
            listed += row.billable * price
            saved += _share(hub_cost, row.dedup, hub_volume) if hub_volume else row.dedup * price
        items.append(
            TenantUsage(
                tenant=tenant,
                segments=sum(r.billable for r in rows),
                cost_micros=cost,
                list_price_micros=listed,
                savings_micros=listed - cost,
                dedup_segments=sum(r.dedup for r in rows),
                dedup_savings_micros=saved,
                carriers=carriers,
            )
        )
    return UsageView(
        period=f"{month:%Y-%m}", rates=sorted(rates.values(), key=lambda r: r.carrier), items=items
    )


def _month_after(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


MICROS_PER_FEN = 10_000


async def close_period(
    conn: asyncpg.Connection,
    month: date,
    actor: str,
    *,
    grace_days: int,
    default_list_price: int,
    now: datetime | None = None,
) -> CloseSummary:
    """Close a month once its grace window has passed: per carrier, the tiers on the hub-wide
    volume give the hub's cost (rounded to the fen), split over the tenants pro rata by
    segments by largest remainder, so their lines add up to it exactly. Closing again answers
    the same summary and changes nothing."""
    end = _month_after(month)
    closable = datetime.combine(end, time(), BUSINESS_TZ) + timedelta(days=grace_days)
    if (now or datetime.now(UTC)) < closable:
        raise Conflict(
            f"{month:%Y-%m} can be closed from {closable:%Y-%m-%d %H:%M} (Asia/Shanghai)"
        )
    if await conn.fetchval(sql.CLOSED_AT, month) is None:
        while await roll_up(conn):  # every entry of the month into the rollup, before closing
            pass
        if await conn.fetchval(sql.CLOSE_PERIOD, month, actor) is not None:
            await _write_close(conn, month, end, default_list_price)
    return await close_summary(conn, month)


async def _write_close(
    conn: asyncpg.Connection, month: date, end: date, default_list_price: int
) -> None:
    rows: dict[str, list[asyncpg.Record]] = {}
    for r in await conn.fetch(sql.MONTH_USAGE, month, end):
        rows.setdefault(r["carrier"], []).append(r)
    costs: list[tuple[str, int, int, int | None]] = []
    lines: list[tuple[int, str, int, int, int, int]] = []
    for carrier, tenants in rows.items():
        volume = sum(r["billable"] for r in tenants)
        card = await card_in_force(conn, carrier, month)
        micros = (
            pricing.cost(card.mode, card.bands, volume) if card else volume * default_list_price
        )
        fen = (micros + MICROS_PER_FEN // 2) // MICROS_PER_FEN
        costs.append((carrier, volume, fen * MICROS_PER_FEN, card.id if card else None))
        list_price = card.list_price_micros if card else default_list_price
        shares = pricing.allocate(fen, [r["billable"] for r in tenants])
        lines += [
            (
                r["tenant_id"],
                carrier,
                r["billable"],
                share * MICROS_PER_FEN,
                r["billable"] * list_price,
                r["dedup"],
            )
            for r, share in zip(tenants, shares, strict=True)
        ]
    if costs:
        await conn.execute(sql.INSERT_CARRIER_COSTS, month, *map(list, zip(*costs, strict=True)))
    if lines:
        await conn.execute(sql.INSERT_LINES, month, *map(list, zip(*lines, strict=True)))


async def close_summary(conn: asyncpg.Connection, month: date) -> CloseSummary:
    closed_at = await conn.fetchval(sql.CLOSED_AT, month)
    if closed_at is None:
        raise NotFound(f"{month:%Y-%m} is not closed")
    carriers = [
        msgspec.convert(dict(r.items()), CarrierCost)
        for r in await conn.fetch(sql.CARRIER_COSTS, month)
    ]
    totals = await conn.fetchrow(sql.LINE_TOTALS, month)
    assert totals is not None
    return CloseSummary(
        period=f"{month:%Y-%m}",
        closed_at=closed_at,
        carriers=carriers,
        lines=totals["lines"],
        cost_micros=totals["cost_micros"],
    )


async def ensure_open(conn: asyncpg.Connection, month: date) -> None:
    """409 if `month` (or a later one) is closed: a closed period is never written again."""
    last = await conn.fetchval(sql.LAST_CLOSED)
    if last is not None and month <= last:
        raise Conflict(f"{month:%Y-%m} is closed (billing is closed up to {last:%Y-%m})")


LEVEL_ORDER = ("hub", "province", "prefecture", "county", "unit")


def _add(totals: Totals, line: StatementLine) -> Totals:
    return Totals(
        segments=totals.segments + line.segments,
        cost_micros=totals.cost_micros + line.cost_micros,
        list_price_micros=totals.list_price_micros + line.list_price_micros,
        savings_micros=totals.savings_micros + line.savings_micros,
        dedup_segments=totals.dedup_segments + line.dedup_segments,
    )


async def statement(conn: asyncpg.Connection, who: Principal, month: date) -> Statement:
    """A closed month for the caller's subtree: its lines per tenant and carrier, rolled up per
    level (province, prefecture, county, unit) and in total."""
    if await conn.fetchval(sql.CLOSED_AT, month) is None:
        raise NotFound(f"{month:%Y-%m} is not closed yet: GET /v1/usage has the estimate")
    lines = [
        StatementLine(**dict(r.items()), savings_micros=r["list_price_micros"] - r["cost_micros"])
        for r in await conn.fetch(sql.STATEMENT_LINES, month, who.tenant_path)
    ]
    per_level: dict[str, Totals] = {}
    tenants: dict[str, set[str]] = {}
    total = Totals()
    for line in lines:
        per_level[line.level] = _add(per_level.get(line.level, Totals()), line)
        tenants.setdefault(line.level, set()).add(line.tenant)
        total = _add(total, line)
    levels = [
        LevelTotals(level, len(tenants[level]), per_level[level])
        for level in sorted(
            per_level, key=lambda lv: LEVEL_ORDER.index(lv) if lv in LEVEL_ORDER else 99
        )
    ]
    return Statement(
        period=f"{month:%Y-%m}", tenant=who.tenant_code, levels=levels, lines=lines, totals=total
    )
