"""A person's data as the operator asks for it and is answered."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

# A phone as submitted: long enough for any spelling of one, short enough to refuse junk.
Phone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# A lookup's page of messages; the rosters, opt-outs and replies are capped at CAP each.
PAGE_MAX = 500
CAP = 1_000


class PersonQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/people/lookup`: the phone in the body, so it is in no URL or access log."""

    phone: Phone
    # Cursor: the `next_after` of the previous page (messages after that one).
    after: Annotated[int, msgspec.Meta(ge=0, le=2**53)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=PAGE_MAX)] = 100


class EraseRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/people/erase`: the phone, and why (a request under PIPL art. 47, a ticket…)."""

    phone: Phone
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class SentMessage(msgspec.Struct, frozen=True):
    id: int
    tenant: str
    send_id: int
    at: datetime
    status: str
    # As the phone showed it: 【signature】 and the message's own body or its send's. A
    # second-factor code shows its placeholder.
    text: str
    # Who sent it: `user:<login>`, `key:<prefix>`, `campaign:<id>`, `system:second-factor`.
    sender: str
    # The hub's own (a second-factor code), not a tenant's.
    system: bool


class RosterEntry(msgspec.Struct, frozen=True):
    tenant: str
    contact_id: int
    name: str


class OptOut(msgspec.Struct, frozen=True):
    tenant: str
    at: datetime


class Reply(msgspec.Struct, frozen=True):
    tenant: str
    id: int
    send_id: int | None
    at: datetime
    text: str
    opt_out: bool


class PersonData(msgspec.Struct, frozen=True):
    """What the hub holds of one phone, across every tenant."""

    phone: str
    # Erased before: the hub messages it no more (the rows below are what came after, if any).
    erased: bool
    messages: list[SentMessage]
    # Pass as `after` for the next page of messages; null on the last one.
    next_after: int | None
    # At most 1,000 each (the first page and every other carry them alike).
    contacts: list[RosterEntry]
    opt_outs: list[OptOut]
    replies: list[Reply]


class Erased(msgspec.Struct, frozen=True):
    """What an erasure removed, per table (rows, or for `sends.rejects` entries)."""

    # The phone's HMAC-SHA256 under HUB_PEOPLE__SECRET, hex: its row in `erased_phones` and
    # its name in the operation log.
    phone_hash: str
    counts: dict[str, int]
