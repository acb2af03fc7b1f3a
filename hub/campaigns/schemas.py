"""API shapes for campaigns."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from hub.calendar import ClockTime
from hub.contacts.schemas import Tag


class CreateCampaign(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    kind: Literal["anniversary"]
    # The roster date whose anniversary it marks.
    field: Literal["joined_on"]
    # An approved template; it may use {name} and {years}.
    template: Annotated[int, msgspec.Meta(ge=1, le=2**53)]
    # Asia/Shanghai wall clock.
    send_time: ClockTime = "09:00"
    # Only contacts with any of these tags; empty: the whole roster.
    to_tags: Annotated[list[Tag], msgspec.Meta(max_length=100)] = []


class Campaign(msgspec.Struct, frozen=True):
    id: int
    kind: str
    field: str
    template: int
    send_time: str
    to_tags: list[str]
    active: bool
    created_at: datetime


class CampaignList(msgspec.Struct, frozen=True):
    items: list[Campaign]
