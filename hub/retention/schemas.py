"""What a retention run is told (its cutoffs) and what it answers (what went, or would go).

Each domain that keeps personal data owns the step that erases its own rows: it takes the
run's `Policy` and answers a `Gone` per table or partition it touched (or, dry, would touch)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """One run's cutoffs, computed once from the operator's settings and the tenants' own
    (shorter) periods, so that every step of the run erases up to the same instants."""

    now: datetime
    # Every message created before this loses its phone and body (the operator's period).
    messages_before: datetime
    # Tenants that chose a shorter period: their messages created before this (later than
    # `messages_before`) lose theirs too.
    tenants_before: dict[int, datetime] = {}
    # The other tables' cutoffs (hub.retention.service.policy, from HUB_RETENTION__*): rows
    # older than these go (or lose their personal columns). None: that step does nothing.
    inbound_before: datetime | None = None
    resubscriptions_before: datetime | None = None
    webhook_deliveries_before: datetime | None = None
    idempotency_keys_before: datetime | None = None
    unmatched_receipts_before: datetime | None = None
    outbox_before: datetime | None = None
    rejects_before: datetime | None = None
    sessions_before: datetime | None = None
    user_codes_before: datetime | None = None
    user_invites_before: datetime | None = None
    campaign_deliveries_before: datetime | None = None
    # Rows per transaction: every step commits each batch (keyset by id where there is one).
    batch: int = 5000


class Gone(msgspec.Struct, frozen=True, kw_only=True):
    """One table or partition a run erased from (or, dry, would erase from)."""

    what: str  # the table or partition: "inbound", "messages_2026_05"
    how: str  # "partition dropped", "phones and bodies erased", "rows deleted"
    rows: int


Days = Annotated[int, msgspec.Meta(ge=1, le=3650)]


class RetentionSetting(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """PUT /v1/tenants/{code}/retention: a tenant's own period for its messages' phones and
    bodies, at most the operator's (HUB_RETENTION__MESSAGES_DAYS); null drops it."""

    messages_days: Days | None
    # True: the tenants below keep theirs no longer either (unless they chose shorter still).
    subtree: bool = False


class RetentionView(msgspec.Struct, frozen=True, kw_only=True):
    """The period in force for a tenant's messages, and where it comes from."""

    tenant: str
    # Days its messages keep their phones and bodies: the shortest of the operator's, its own
    # and those its ancestors set for their subtrees.
    messages_days: int
    # "hub" (the operator's), "own", or "ancestor" (a tenant above set it for its subtree).
    source: Literal["hub", "own", "ancestor"]
    # What the tenant itself chose (null: nothing) and whether it holds for its subtree.
    own_days: int | None
    subtree: bool
    # The longest a tenant may choose: the operator's period.
    max_days: int
