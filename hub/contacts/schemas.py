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
    # The same reason in Chinese, as the console shows it ("姓名为空", "手机号 12345：号码无效").
    words: str = ""


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


# A contact's name as the roster import accepts it (hub.contacts.service._check).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=LINE_PATTERN)]
FieldName = Annotated[str, msgspec.Meta(min_length=1, max_length=50, pattern=LINE_PATTERN)]
FieldValue = Annotated[str, msgspec.Meta(max_length=1000, pattern=LINE_PATTERN)]


class ContactUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """PATCH /v1/contacts/{id}: what is given replaces what was (tags and fields whole)."""

    name: Name | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=50)] | None = None
    fields: Annotated[dict[FieldName, FieldValue], msgspec.Meta(max_length=60)] | None = None


# Why an opted-out phone is taken back: required, one line of at most 200 characters.
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=LINE_PATTERN)]


class ResubscribeIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: Reason


class Resubscription(msgspec.Struct, frozen=True):
    id: int
    phone: str
    opted_out_at: datetime
    reason: str
    actor: str  # who took the phone back: `user:<login>` or `key:<prefix>`
    at: datetime
