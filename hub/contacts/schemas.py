"""API shapes for rosters."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import msgspec

from tenants.schemas import LINE_PATTERN

# A tag a send or campaign names (书记, 大学生村官 …): one line of at most 50 characters.
Tag = Annotated[str, msgspec.Meta(max_length=50, pattern=LINE_PATTERN)]


class RowProblem(msgspec.Struct, frozen=True):
    line: int
    reason: str


class ImportResult(msgspec.Struct, frozen=True):
    rows: int
    created: int
    updated: int
    # Rows not imported, each with its line number (the header is line 1) and why.
    rejected: list[RowProblem]


class Contact(msgspec.Struct, frozen=True):
    id: int
    phone: str
    name: str
    tags: list[str]
    joined_on: date | None
    fields: dict[str, str]
    # The phone replied T / TD / 退订 / 取消 / N to this tenant: sends skip it.
    opted_out: bool
    updated_at: datetime


class ContactPage(msgspec.Struct, frozen=True):
    items: list[Contact]
    next_after: int | None
