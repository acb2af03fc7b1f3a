"""API shapes for sends and their messages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from hub.calendar import ClockTime
from hub.contacts.schemas import Tag
from hub.messages.numbers import Rejected
from hub.templates.schemas import TemplateBody, TemplateVars

Priority = Literal["urgent", "normal", "bulk"]
# A phone as the caller has it; spreadsheets often send numbers. Anything unusable is rejected
# on its own (with a reason), never the whole send.
Phone = str | int


class SendRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # Rules across fields, also stated in the OpenAPI document (hub.app reads this): at least
    # one recipient source, and exactly one of `body` and `template`.
    __openapi_rules__: ClassVar = {
        "allOf": [
            {
                "anyOf": [
                    {"required": ["to"], "properties": {"to": {"minItems": 1}}},
                    {"required": ["to_tags"], "properties": {"to_tags": {"minItems": 1}}},
                    {"required": ["to_contacts"], "properties": {"to_contacts": {"minItems": 1}}},
                ]
            },
            {
                "oneOf": [
                    {"required": ["body"], "properties": {"body": {"type": "string"}}},
                    {"required": ["template"], "properties": {"template": {"type": "integer"}}},
                ]
            },
        ]
    }

    # Recipients: any mix of these three, at least one of them not empty.
    # Phones as people write them (+86, 0086, spaces, dashes, full-width digits).
    to: Annotated[list[Phone], msgspec.Meta(max_length=1_000_000)] = []
    # Contacts of the caller's roster carrying any of these tags (书记, 大学生村官 …) …
    to_tags: Annotated[list[Tag], msgspec.Meta(max_length=100)] = []
    # … and with `subtree`, of every roster in the caller's subtree.
    subtree: bool = False
    # Contact ids of the caller's roster (an id that is not is rejected on its own).
    to_contacts: Annotated[list[int], msgspec.Meta(max_length=100_000)] = []
    # Without the signature; the tenant's 【signature】 is prepended. Line breaks and tabs are
    # fine; other control characters are not text a phone can show.
    body: TemplateBody | None = None
    # Or an approved template (the sender's own or an ancestor's) and its variables.
    template: Annotated[int, msgspec.Meta(ge=1, le=2**53)] | None = None
    vars: TemplateVars = {}
    # "urgent" goes past quiet hours and ahead of every normal and bulk send; it needs a key
    # with the messages:urgent scope (403 otherwise).
    priority: Priority = "normal"
    # When to send (with a timezone); absent or past: now. Normal and bulk sends that would go
    # in the quiet hours wait until they end; urgent ones go at once.
    send_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    # "off": skip the cross-tenant content dedup for this send (repeats in `to` still collapse).
    dedup: Literal["on", "off"] = "on"


class Counts(msgspec.Struct, frozen=True):
    accepted: int
    deduplicated: int
    opted_out: int
    rejected: int
    # The same phone more than once in `to`: sent once.
    repeated: int


SendState = Literal["scheduled", "held", "queued", "cancelled"]


class SendAccepted(msgspec.Struct, frozen=True):
    id: int
    # scheduled (send_at ahead), held (in quiet hours until held_until), queued, cancelled.
    state: SendState
    # When it may go: send_at, or the end of the quiet hours it fell in.
    due_at: datetime
    held_until: datetime | None
    counts: Counts
    rejected: list[Rejected]
    encoding: str
    segments_per_message: int
    # Reserved from the quota: accepted * segments_per_message.
    segments: int
    # What these segments would cost at list price, in micro-yuan (1e-6 yuan).
    list_price_micros: int


class SendView(msgspec.Struct, frozen=True):
    id: int
    tenant: str
    state: str
    send_at: datetime | None
    held_until: datetime | None
    due_at: datetime
    signature: str
    body: str
    priority: str
    dedup: bool
    encoding: str
    segments_per_message: int
    segments: int
    list_price_micros: int
    created_at: datetime
    # Messages by status right now (accepted, sent, delivered, deduplicated, opted_out, …).
    statuses: dict[str, int]
    rejected: list[Rejected]


class QuietHoursSetting(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool
    # Asia/Shanghai wall clock, HH:MM; a window may cross midnight (22:00 to 08:00).
    starts: ClockTime = "22:00"
    ends: ClockTime = "08:00"


class QuietHoursView(msgspec.Struct, frozen=True):
    tenant: str
    enabled: bool
    starts: str
    ends: str
    # "tenant": its own setting; "operator": the hub-wide default.
    source: str


class MessageView(msgspec.Struct, frozen=True):
    id: int
    phone: str
    carrier: str
    status: str
    segments: int
    # Deduplicated: who already reached the phone with the same notice. "subtree": a tenant in
    # the caller's own subtree, named with its message (duplicate_of, duplicate_tenant);
    # "another_sender": a tenant outside it, of which nothing more is shown (no code, no id, no
    # content: dedup never tells one tenant what another sent).
    duplicate_source: Literal["subtree", "another_sender"] | None
    duplicate_of: int | None
    duplicate_tenant: str | None
    updated_at: datetime


class SendSummary(msgspec.Struct, frozen=True):
    """A recent send at a glance: its messages counted by status."""

    id: int
    body: str
    state: str
    priority: str
    recipients: int
    segments: int
    created_at: datetime
    statuses: dict[str, int]


class MessagePage(msgspec.Struct, frozen=True):
    items: list[MessageView]
    next_after: int | None
