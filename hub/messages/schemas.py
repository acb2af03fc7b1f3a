"""API shapes for sends and their messages."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from hub.calendar import ClockTime
from hub.contacts.schemas import Tag
from hub.messages.numbers import Rejected
from hub.templates.schemas import TemplateBody, TemplateVars

Priority = Literal["urgent", "normal", "bulk"]
# A follow-up of a send: a reminder to those who have not replied, or a resend to the failed.
FollowKind = Literal["remind", "resend"]
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
    # Per-recipient values of placeholders left in the text ({姓名}…), by phone as written in
    # `to`: over what the caller's roster says of the phone (hub.messages.personal).
    values: Annotated[
        dict[Annotated[str, msgspec.Meta(max_length=64)], TemplateVars],
        msgspec.Meta(max_length=100_000),
    ] = {}
    # "urgent" goes past quiet hours and ahead of every normal and bulk send; it needs a key
    # with the messages:urgent scope (403 otherwise).
    priority: Priority = "normal"
    # When to send (with a timezone); absent or past: now. Normal and bulk sends that would go
    # in the quiet hours wait until they end; urgent ones go at once.
    send_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    # "off": skip the cross-tenant content dedup for this send (repeats in `to` still collapse).
    dedup: Literal["on", "off"] = "on"
    # Ask for a reply (回复1确认参会): replies from its phones are linked to it (the newest such
    # send of the tenant to the phone, within HUB_DELIVERY__REPLY_WINDOW_SECONDS of it going),
    # and GET /v1/messages/{id}/recipients?replied=false lists who has not replied.
    reply_wanted: bool = False


class Counts(msgspec.Struct, frozen=True):
    accepted: int
    deduplicated: int
    opted_out: int
    rejected: int
    # The same phone more than once in `to`: sent once.
    repeated: int


# review: caught by a review rule (hub.reviews), waiting for a reviewer's decision.
SendState = Literal["scheduled", "held", "queued", "cancelled", "review"]


class SendAccepted(msgspec.Struct, frozen=True):
    id: int
    # scheduled (send_at ahead), held (in quiet hours until held_until), queued, cancelled,
    # review (caught by a review rule: it goes once approved; due_at is then recomputed).
    state: SendState
    # When it may go: send_at, or the end of the quiet hours it fell in.
    due_at: datetime
    held_until: datetime | None
    counts: Counts
    rejected: list[Rejected]
    encoding: str
    # What each message costs; a personal send's ({姓名}), the dearest of them.
    segments_per_message: int
    # Reserved from the quota: the accepted messages' segments (accepted * segments_per_message
    # unless the send is personal).
    segments: int
    # What these segments would cost at list price, in micro-yuan (1e-6 yuan).
    list_price_micros: int


class SendPreview(msgspec.Struct, frozen=True):
    """What POST /v1/messages would answer for the same body now, written nowhere: the same
    counts, segments and list price, and besides them the text as phones show it, the cost at the
    hub's current prices and the quota left."""

    # 【…】 as prepended, and the whole text a phone shows ({姓名} and other roster placeholders
    # as written: each recipient's entry fills them in).
    signature: str
    text: str
    # A personal send: what the first recipient that would be sent to reads.
    example: str | None
    state: SendState
    due_at: datetime
    held_until: datetime | None
    counts: Counts
    rejected: list[Rejected]
    encoding: str
    segments_per_message: int
    segments: int
    list_price_micros: int
    # These segments at the month's current blended prices (hub.billing.service.quote).
    cost_micros: int
    # The month whose quota it uses (YYYY-MM) and what the tenant can still reserve in it.
    period: str
    quota_available: int


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
    # Who created it: key:<prefix>, campaign:<id>, …
    sender: str
    reply_wanted: bool
    # A reminder or resend names the first send of its family and what it is to it.
    follows: int | None
    follow_kind: FollowKind | None
    # Review (审核): why a rule caught it (free_text, above:<N>; null: not caught); while it
    # waits (state review), when the review expires; an urgent send that went at once and
    # is reviewed after the fact (review_after). Who decided, when, and the note.
    review_reason: str | None = None
    review_due_at: datetime | None = None
    review_after: bool = False
    approved_by: str | None = None
    approved_at: datetime | None = None
    rejected_by: str | None = None
    rejected_at: datetime | None = None
    review_note: str | None = None
    # Why a cancelled send was: rejected, review expired (null: its sender cancelled it).
    cancel_reason: str | None = None


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
    # Null once the operator erased the phone at its owner's request (hub.people).
    phone: str | None
    # The phone's name in the sending tenant's roster (null: not in it).
    name: str | None
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
    # What the gateway or the hub said of a message that did not (or may not) arrive.
    error: str | None
    # Whether the phone replied to this send or to a send of its family (the first send and
    # its reminders and resends); null for a key that may not read replies.
    replied: bool | None
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


# A fragment of a send's body to look for: one line of text, bounded (the search is a LIKE over
# the caller's sends; its characters are matched literally, `%` and `_` included).
SearchText = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")
]
# Who created a send, as sends record it: key:<prefix>, campaign:<id>, user:<id> …
Sender = Annotated[str, msgspec.Meta(max_length=80, pattern=r"^[a-z]+:[A-Za-z0-9_.-]{1,64}$")]
DatedBy = Literal["created", "due"]


class SendFilters(msgspec.Struct, frozen=True, kw_only=True):
    """What GET /v1/messages and the sends page filter by (all optional, all combined)."""

    subtree: bool = False
    # Business days (Asia/Shanghai), inclusive, of the send's creation or due time.
    date_from: date | None = None
    date_to: date | None = None
    dated: DatedBy = "created"
    state: Literal["scheduled", "held", "queued", "cancelled", "done", "review"] | None = None
    # Sends having at least one message in any of these statuses (failed, undelivered, …).
    has_status: list[str] = []
    text: str | None = None
    sender: str | None = None
    reply_wanted: bool | None = None
    # Keyset: sends with ids below this one (newest first).
    before: int | None = None
    limit: int = 50


class SendListItem(msgspec.Struct, frozen=True):
    id: int
    tenant: str
    state: str
    priority: str
    body: str
    sender: str
    reply_wanted: bool
    follows: int | None
    follow_kind: FollowKind | None
    # As submitted, repeats included.
    recipients: int
    segments: int
    created_at: datetime
    due_at: datetime
    # Replies linked to this send itself.
    replies: int
    statuses: dict[str, int]
    # Review (审核), as GET /v1/messages/{id} shows it.
    review_due_at: datetime | None = None
    review_after: bool = False
    approved_by: str | None = None
    rejected_by: str | None = None
    review_note: str | None = None
    cancel_reason: str | None = None


class SendPage(msgspec.Struct, frozen=True):
    items: list[SendListItem]
    # Pass as `before` for the next (older) page; null on the last.
    next_before: int | None


class LinkedReply(msgspec.Struct, frozen=True):
    id: int
    # The send of the family it was linked to (the first send, or a reminder or resend).
    send_id: int
    phone: str
    text: str
    opt_out: bool
    received_at: datetime


class ReplyPage(msgspec.Struct, frozen=True):
    items: list[LinkedReply]
    next_after: int | None


class FollowUpRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A reminder or a resend: a new send, to recipients of the first, through the same path as
    POST /v1/messages (signature, quota, dedup, quiet hours, Idempotency-Key)."""

    # The text; absent: a resend repeats the send's body, a reminder prefixes it with 提醒：
    # (the same text within the dedup window would be suppressed as a copy the phone has).
    body: TemplateBody | None = None
    # Absent: the first send's priority (urgent still needs messages:urgent).
    priority: Priority | None = None
    send_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    dedup: Literal["on", "off"] = "on"


class ArchivedReply(msgspec.Struct, frozen=True):
    """A reply as the archive keeps it: what was said and when, never who (the phone)."""

    text: str
    opt_out: bool
    received_at: datetime


class ArchivedSend(msgspec.Struct, frozen=True, kw_only=True):
    """One notice as the archive (hub.archive) records it: its text, who sent and approved it,
    its times, its recipients counted by status (never their phones), its replies and what
    the segments that went cost at list price."""

    id: int
    tenant: str
    signature: str  # as sent: 【…】
    body: str  # the send's text; a personal send's keeps its placeholders
    priority: str
    state: str
    sender: str  # the actor: user:<login>, key:<prefix>, campaign:<id>
    approved_by: str | None
    approved_at: datetime | None
    created_at: datetime
    due_at: datetime
    cancelled_at: datetime | None
    first_sent_at: datetime | None  # the first of its messages handed to a carrier
    last_done_at: datetime | None  # the last of its messages to reach a final status
    recipients: int  # as submitted, repeats included
    statuses: dict[str, int]  # messages by status
    went_segments: int  # segments of messages that went to a carrier (sent, (un)delivered)
    list_price_micros: int  # those segments at list price
    reply_wanted: bool
    follows: int | None
    follow_kind: FollowKind | None
    replies: int
    reply_texts: list[ArchivedReply]  # the first ARCHIVE_REPLY_TEXTS, while kept
