"""API shapes for message templates."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from tenants.schemas import CONTROL_CHARS, LINE_CONTROL_CHARS

TemplateBody = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=500, pattern=rf"^[^{CONTROL_CHARS}]+$"),
]


class CreateTemplate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=100, pattern=rf"^[^{LINE_CONTROL_CHARS}]+$")
    ]
    # `{name}`-style placeholders, e.g. "{name}同志，今天是您入党{years}周年纪念日。"
    body: TemplateBody


class Review(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A reviewer's decision on a pending template or signature."""

    decision: Literal["approve", "reject"]
    # Text for the author; line breaks and tabs are fine, other control characters are not.
    note: Annotated[str, msgspec.Meta(max_length=500, pattern=rf"^[^{CONTROL_CHARS}]*$")] = ""


class Template(msgspec.Struct, frozen=True):
    id: int
    tenant: str
    name: str
    body: str
    variables: list[str]
    # pending until an ancestor approves or rejects it; only approved templates can be sent.
    status: str
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None
    created_at: datetime


class TemplateList(msgspec.Struct, frozen=True):
    items: list[Template]
