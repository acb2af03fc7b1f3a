"""API shapes for message templates."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from tenants.schemas import CONTROL_CHARS, LINE_PATTERN

# What a body (and a variable's value) may not hold: control characters other than line
# breaks and tabs, and the 【】 brackets, which only the hub writes (the sender's signature): a
# body holding them could show a phone a second, forged signature.
NOT_IN_BODY = rf"{CONTROL_CHARS}【】"
TemplateBody = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=500, pattern=rf"^[^{NOT_IN_BODY}]+(?!\n)$"),
]
# A template's variables, as a send gives them: at most 50, each value at most 500 characters
# of body text (a placeholder's name has at most 40, see hub.templates.service.PLACEHOLDER).
TemplateVars = Annotated[
    dict[
        Annotated[str, msgspec.Meta(min_length=1, max_length=40)],
        Annotated[str, msgspec.Meta(max_length=500, pattern=rf"^[^{NOT_IN_BODY}]*(?!\n)$")],
    ],
    msgspec.Meta(max_length=50),
]


class CreateTemplate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=LINE_PATTERN)]
    # `{name}`-style placeholders, e.g. "{name}同志，今天是您入党{years}周年纪念日。"
    body: TemplateBody


class Review(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A reviewer's decision on a pending template or signature."""

    decision: Literal["approve", "reject"]
    # Text for the author; line breaks and tabs are fine, other control characters are not.
    note: Annotated[str, msgspec.Meta(max_length=500, pattern=rf"^[^{CONTROL_CHARS}]*(?!\n)$")] = ""


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
