"""API shapes for review before sending (审核): a tenant's rule and the queue of sends."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from tenants.schemas import CONTROL_CHARS

# none: nothing is caught; free_text: every send whose body is not an approved template;
# above: every send to more than `above` recipients.
RuleKind = Literal["none", "free_text", "above"]
# What the queue lists: sends waiting in review, or urgent sends that went at once and are
# reviewed after the fact.
Waiting = Literal["review", "after"]
# A reviewer's note: line breaks and tabs are fine, other control characters are not.
Note = Annotated[str, msgspec.Meta(max_length=500, pattern=rf"^[^{CONTROL_CHARS}]*(?!\n)$")]


class RuleSetting(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    rule: RuleKind
    # The recipient threshold of `above` (sends to more than this many are caught); only then.
    above: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] | None = None
    # The rule binds every tenant below too (their own rules cannot loosen it).
    subtree: bool = False


class Rule(msgspec.Struct, frozen=True):
    tenant: str
    rule: RuleKind
    above: int | None
    subtree: bool


class RuleView(msgspec.Struct, frozen=True):
    """A tenant's own rule, and every rule that binds its sends: its own and those of the
    tenants above it marked `subtree`. A send is caught when any of them catches it."""

    tenant: str
    rule: RuleKind
    above: int | None
    subtree: bool
    binding: list[Rule]


class Decision(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """An approval, with a note if the reviewer likes."""

    note: Note = ""


class Rejection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A rejection: the note is required (the sender reads it): some visible character."""

    note: Annotated[
        str,
        msgspec.Meta(
            max_length=500,
            pattern=rf"^[^{CONTROL_CHARS}]*[^{CONTROL_CHARS}\s][^{CONTROL_CHARS}]*(?!\n)$",
        ),
    ]


class ReviewItem(msgspec.Struct, frozen=True):
    id: int
    tenant: str
    tenant_name: str
    state: str
    priority: str
    signature: str
    body: str
    sender: str
    # Its messages that would go (valid, not opted out), and their segments.
    recipients: int
    segments: int
    list_price_micros: int
    created_at: datetime
    due_at: datetime
    # Why the rules caught it: free_text or above:<N>.
    review_reason: str | None
    # While it waits: when the review expires (it is then cancelled, its quota released).
    review_due_at: datetime | None
    review_after: bool


class ReviewPage(msgspec.Struct, frozen=True):
    items: list[ReviewItem]
    # Pass as `after` for the next page; null on the last.
    next_after: int | None
