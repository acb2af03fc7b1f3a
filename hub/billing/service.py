"""Billing: rate cards (the operator's), checked before they are stored; usage facts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

import asyncpg
import msgspec

from hub import calendar
from hub.billing import pricing
from hub.billing import repository as sql
from hub.billing.pricing import MICROS_PER_FEN
from hub.billing.schemas import (
    CarrierCost,
    CarrierRate,
    CloseSummary,
    LevelTotals,
    RateCard,
    RateCardIn,
    StatementHead,
    StatementLine,
    TenantCarrierUsage,
    TenantUsage,
    Totals,
    UsageView,
)
from hub.calendar import BUSINESS_TZ, next_period
from hub.errors import Conflict, Forbidden, Invalid, NotFound
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
    found = pricing.problems(card.bands, card.list_price_micros)
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


def card_logged(operator_id: int, card: RateCard) -> dict[str, Any]:
    """What the operation log records of a new rate card (`billing.rate_card`), under the
    operator's tenant: `await oplog.record(conn, who, **card_logged(root_id, card))`."""
    return {
        "action": "billing.rate_card",
        "tenant_id": operator_id,
        "object": f"rate_card:{card.id}",
        "after": card,
    }


async def list_cards(conn: asyncpg.Connection, carrier: str | None) -> list[RateCard]:
    return [_card(r) for r in await conn.fetch(sql.CARDS, carrier)]


async def card_in_force(conn: asyncpg.Connection, carrier: str, month: date) -> RateCard | None:
    record = await conn.fetchrow(sql.CARD_IN_FORCE, carrier, month)
    return None if record is None else _card(record)


UsageKind = Literal["billable", "dedup", "delivered", "undelivered"]


UsageKey = tuple[int, str, date]  # tenant id, carrier, the business day the segments went out


async def record_usage(
    conn: asyncpg.Connection, kind: UsageKind, segments: Mapping[UsageKey, int]
) -> None:
    """Note segments that became billable, were saved by dedup, or got their final receipt,
    per tenant, carrier and the day they were sent (Asia/Shanghai): a receipt that comes after
    midnight, or after the month's end, counts on the day its message went out — within the
    close's grace window for that month's close, later as an adjustment. Appended, never
    updated in place: callers sit on delivery's hot path."""
    await record_usages(conn, {kind: segments})


async def record_usages(
    conn: asyncpg.Connection, usage: Mapping[UsageKind, Mapping[UsageKey, int]]
) -> None:
    """`record_usage` of several kinds at once, in one statement."""
    live = [(k, t, c, d, n) for k, per in usage.items() for (t, c, d), n in per.items() if n > 0]
    if live:
        columns = (list(column) for column in zip(*live, strict=True))
        await conn.execute(sql.RECORD_USAGE, *columns)


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
    records = await conn.fetch(sql.USAGE, tenant_path, month, next_period(month), subtree)
    return [msgspec.convert(dict(r.items()), CarrierUsage) for r in records]


def _share(total: int, part: int, whole: int) -> int:
    """total * part / whole, rounded half up, in integers."""
    return (2 * total * part + whole) // (2 * whole) if whole else 0


def _priced(card: RateCard | None, volume: int, default_list_price: int) -> tuple[int, int]:
    """What `volume` segments of a month cost the hub under `card` (at the list price where no
    card is in force), and the list price per segment."""
    if card is None:
        return volume * default_list_price, default_list_price
    return pricing.cost(card.mode, card.bands, volume), card.list_price_micros


async def _rates(
    conn: asyncpg.Connection, month: date, end: date, default_list_price: int
) -> dict[str, CarrierRate]:
    rates: dict[str, CarrierRate] = {}
    for r in await conn.fetch(sql.HUB_VOLUME, month, end):
        carrier, volume = r["carrier"], r["segments"]
        card = await card_in_force(conn, carrier, month)
        cost, list_price = _priced(card, volume, default_list_price)
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
    end = next_period(month)
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


async def quote(
    conn: asyncpg.Connection,
    month: date,
    segments_by_carrier: Mapping[str, int],
    default_list_price: int,
) -> int:
    """What these segments would cost at the month's current prices, as `estimate` prices a
    tenant's segments: their share of the hub's cost so far per carrier. A carrier with no volume
    yet this month: its card's price for that many (the list price where no card is in force)."""
    if not any(segments_by_carrier.values()):
        return 0
    rates = await _rates(conn, month, next_period(month), default_list_price)
    total = 0
    for carrier, segments in segments_by_carrier.items():
        rate = rates.get(carrier)
        if rate is not None and rate.hub_segments:
            total += _share(rate.hub_cost_micros, segments, rate.hub_segments)
        else:
            card = await card_in_force(conn, carrier, month)
            total += _priced(card, segments, default_list_price)[0]
    return total


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
    segments by largest remainder, so their lines add up to it exactly. Usage of earlier closed
    months that arrived after their close is billed with it as adjustment lines. Closing again
    answers the same summary and changes nothing; months close in order."""
    end = next_period(month)
    closable = datetime.combine(end, time(), BUSINESS_TZ) + timedelta(days=grace_days)
    if (now or calendar.now()) < closable:
        raise Conflict(
            f"{month:%Y-%m} can be closed from {closable:%Y-%m-%d %H:%M} (Asia/Shanghai)"
        )
    if await conn.fetchval(sql.CLOSED_AT, month) is None:
        await ensure_open(conn, month)
        while await roll_up(conn):  # every entry of the month into the rollup, before closing
            pass
        unclosed = await conn.fetchval(sql.UNCLOSED_BEFORE, month)
        if unclosed is not None:
            raise Conflict(f"close {unclosed:%Y-%m} first: it has usage and is not closed")
        if await conn.fetchval(sql.CLOSE_PERIOD, month, actor) is not None:
            await _write_close(conn, month, default_list_price)
    return await close_summary(conn, month)


class _Bill(msgspec.Struct):
    """What a close writes: per (origin, carrier) the hub's cost, and the tenants' lines."""

    costs: list[tuple[date, str, int, int, int | None]] = msgspec.field(default_factory=list)
    lines: list[tuple[date, int, str, int, int, int, int]] = msgspec.field(default_factory=list)

    def add(
        self,
        origin: date,
        carrier: str,
        fen: int,
        card: RateCard | None,
        list_price: int,
        tenants: list[asyncpg.Record],
    ) -> None:
        """The carrier's `fen` over `tenants` pro rata by segments, none above its list price
        (which is a whole number of fen per segment, and no band costs more)."""
        segments = [r["billable"] for r in tenants]
        listed = [n * list_price for n in segments]
        shares = pricing.split(fen, segments, list_price)
        self.costs.append(
            (origin, carrier, sum(segments), fen * MICROS_PER_FEN, card.id if card else None)
        )
        self.lines += [
            (origin, r["tenant_id"], carrier, n, share * MICROS_PER_FEN, m, r["dedup"])
            for r, n, m, share in zip(tenants, segments, listed, shares, strict=True)
        ]


def _by_key(
    records: list[asyncpg.Record], *key: str
) -> dict[tuple[Any, ...], list[asyncpg.Record]]:
    grouped: dict[tuple[Any, ...], list[asyncpg.Record]] = {}
    for r in records:
        grouped.setdefault(tuple(r[k] for k in key), []).append(r)
    return grouped


async def _write_close(conn: asyncpg.Connection, month: date, default_list_price: int) -> None:
    bill = _Bill()
    usage = await conn.fetch(sql.MONTH_USAGE, month, next_period(month))
    for (carrier,), tenants in _by_key(usage, "carrier").items():
        volume = sum(r["billable"] for r in tenants)
        card = await card_in_force(conn, carrier, month)
        micros, list_price = _priced(card, volume, default_list_price)
        bill.add(month, carrier, pricing.to_fen(micros), card, list_price, tenants)
    late = await conn.fetch(sql.LATE_USAGE, month)
    for (origin, carrier), tenants in _by_key(late, "origin", "carrier").items():
        # Late segments cost what the origin month's segments cost: its blended rate.
        volume = sum(r["billable"] for r in tenants)
        card = await card_in_force(conn, carrier, origin)
        micros, list_price = _priced(card, volume, default_list_price)
        closed = await conn.fetchrow(sql.CLOSED_COST, origin, carrier)
        if closed is not None and closed["segments"]:
            fen = pricing.to_fen(volume * closed["cost_micros"], closed["segments"])
        else:  # the carrier had no volume that month: the late segments are its volume
            fen = pricing.to_fen(micros)
        bill.add(origin, carrier, fen, card, list_price, tenants)
    if bill.costs:
        await conn.execute(sql.INSERT_CARRIER_COSTS, month, *_columns(bill.costs))
    if bill.lines:
        await conn.execute(sql.INSERT_LINES, month, *_columns(bill.lines))


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


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


async def closed_at(conn: asyncpg.Connection, month: date) -> datetime | None:
    """When `month` was closed; None while it is open (a closed month is never written again:
    the archive freezes a month's files once it is closed)."""
    closed: datetime | None = await conn.fetchval(sql.CLOSED_AT, month)
    return closed


async def ensure_open(conn: asyncpg.Connection, month: date) -> None:
    """409 if `month` (or a later one) is closed: a closed period is never written again."""
    last = await conn.fetchval(sql.LAST_CLOSED)
    if last is not None and month <= last:
        raise Conflict(f"{month:%Y-%m} is closed (billing is closed up to {last:%Y-%m})")


async def statement_head(conn: asyncpg.Connection, who: Principal, month: date) -> StatementHead:
    """A closed month for the caller's subtree, rolled up per level (province, prefecture,
    county, unit) and in total; its lines are read with `statement_lines`. 404 if still open."""
    closed_at = await conn.fetchval(sql.CLOSED_AT, month)
    if closed_at is None:
        raise NotFound(f"{month:%Y-%m} is not closed yet: GET /v1/usage has the estimate")
    levels, total = [], Totals()
    for r in await conn.fetch(sql.STATEMENT_LEVELS, month, who.tenant_path):
        row = dict(r.items())
        level, tenants = row.pop("level"), row.pop("tenants")
        totals = Totals(**row)
        levels.append(LevelTotals(level, tenants, totals))
        total = add_totals(total, totals)
    return StatementHead(
        period=f"{month:%Y-%m}",
        tenant=who.tenant_code,
        closed_at=closed_at,
        levels=levels,
        totals=total,
    )


def add_totals(a: Totals, b: Totals | StatementLine) -> Totals:
    return Totals(
        segments=a.segments + b.segments,
        cost_micros=a.cost_micros + b.cost_micros,
        list_price_micros=a.list_price_micros + b.list_price_micros,
        savings_micros=a.savings_micros + b.savings_micros,
        dedup_segments=a.dedup_segments + b.dedup_segments,
    )


async def statement_lines(
    conn: asyncpg.Connection, who: Principal, month: date, prefetch: int = 2_000
) -> AsyncIterator[StatementLine]:
    """The closed month's lines of the caller's subtree in tree order, from a server-side
    cursor (the caller holds a transaction open): the whole tree never sits in memory."""
    async for r in conn.cursor(sql.STATEMENT_LINES, month, who.tenant_path, prefetch=prefetch):
        yield StatementLine(**dict(r.items()))
