"""What a retention run is told (its cutoffs) and what it answers (what went, or would go).

Each domain that keeps personal data owns the step that erases its own rows: it takes the
run's `Policy` and answers a `Gone` per table or partition it touched (or, dry, would touch)."""

from __future__ import annotations

from datetime import datetime

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


class Gone(msgspec.Struct, frozen=True, kw_only=True):
    """One table or partition a run erased from (or, dry, would erase from)."""

    what: str  # the table or partition: "inbound", "messages_2026_05"
    how: str  # "partition dropped", "phones and bodies erased", "rows deleted"
    rows: int
