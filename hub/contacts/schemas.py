"""API shapes for rosters."""

from __future__ import annotations

from datetime import date, datetime

import msgspec


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
