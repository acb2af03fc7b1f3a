"""Billing API shapes. Money is integer micro-yuan (1 yuan = 1,000,000) everywhere."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

from hub.settings import Carrier

Micros = Annotated[int, msgspec.Meta(ge=0, le=10**12)]
Segments = Annotated[int, msgspec.Meta(ge=0, le=10**15)]


class Band(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename={"from_": "from"}):
    """Segments of the month's hub-wide volume from `from` (inclusive) to `to` (exclusive; null:
    no end), and what one of them costs."""

    from_: Segments
    to: Segments | None
    price_micros: Micros


class RateCardIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    carrier: Carrier
    valid_from: date  # the first day of a month
    mode: Literal["graduated", "volume"]
    bands: Annotated[list[Band], msgspec.Meta(min_length=1, max_length=50)]
    # What a tenant alone would pay per segment (default 0.06 yuan): a whole number of fen, and
    # no band may cost more, so no tenant's share ever exceeds its list price.
    list_price_micros: Annotated[int, msgspec.Meta(ge=0, le=10**12, multiple_of=10_000)] = 60_000


class RateCard(msgspec.Struct, frozen=True):
    id: int
    carrier: str
    valid_from: date
    mode: Literal["graduated", "volume"]
    bands: list[Band]
    list_price_micros: int
    created_by: str
    created_at: datetime


class RateCardList(msgspec.Struct, frozen=True):
    items: list[RateCard]


class CarrierRate(msgspec.Struct, frozen=True):
    """The month so far for one carrier, hub-wide: its volume, and what the card in force makes
    it cost (list price where no card is in force)."""

    carrier: str
    hub_segments: int
    hub_cost_micros: int
    rate_card: int | None
    list_price_micros: int  # per segment


class TenantCarrierUsage(msgspec.Struct, frozen=True):
    carrier: str
    segments: int
    cost_micros: int


class TenantUsage(msgspec.Struct, frozen=True):
    tenant: str
    segments: int
    # Its share of the hub's cost: its segments at each carrier's blended rate (hub cost / hub
    # volume), rounded to the micro-yuan; an estimate until the period is closed.
    cost_micros: int
    list_price_micros: int  # what the same segments would cost it alone
    savings_micros: int  # list price less cost
    dedup_segments: int  # not sent: the same text had reached the phone already
    dedup_savings_micros: int  # those segments at the blended rate
    carriers: list[TenantCarrierUsage]


class UsageView(msgspec.Struct, frozen=True):
    period: str
    rates: list[CarrierRate]
    items: list[TenantUsage]


class CarrierCost(msgspec.Struct, frozen=True):
    carrier: str
    # The month the segments belong to: the closed month itself, or for an adjustment (usage
    # of an earlier month that arrived after its close) that earlier month.
    origin: str
    segments: int
    cost_micros: int  # the tiers on the hub-wide volume, rounded to the fen
    rate_card: int | None


class CloseSummary(msgspec.Struct, frozen=True):
    period: str
    closed_at: datetime
    carriers: list[CarrierCost]
    lines: int
    # The tenants' lines add up to exactly this: the sum of the carriers' costs.
    cost_micros: int


class Totals(msgspec.Struct, frozen=True):
    segments: int = 0
    cost_micros: int = 0
    list_price_micros: int = 0
    savings_micros: int = 0
    dedup_segments: int = 0


class StatementLine(msgspec.Struct, frozen=True):
    tenant: str
    name: str
    level: str
    carrier: str
    origin: str  # YYYY-MM: the month the segments belong to
    adjustment: bool  # late usage of an earlier, closed month, billed in this one
    segments: int
    cost_micros: int
    list_price_micros: int
    savings_micros: int
    dedup_segments: int


class LevelTotals(msgspec.Struct, frozen=True):
    level: str  # province, prefecture, county, unit
    tenants: int
    totals: Totals


class StatementHead(msgspec.Struct, frozen=True):
    """A closed month of a subtree, summed: per level and in total."""

    period: str
    tenant: str  # whose subtree this is
    closed_at: datetime  # when the month was closed
    levels: list[LevelTotals]
    totals: Totals


class Statement(StatementHead, frozen=True):
    """The head and every line (`GET /v1/billing/{period}/statement`, streamed)."""

    lines: list[StatementLine]
