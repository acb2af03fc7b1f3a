"""API shapes for signature proposals and their review."""

from __future__ import annotations

from datetime import datetime

import msgspec

from tenants.schemas import SignatureText


class ProposeSignature(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Without the 【】 brackets, which the hub adds.
    signature: SignatureText


class Proposal(msgspec.Struct, frozen=True):
    id: int
    tenant: str
    # Brackets included, as it would prefix every message: "【锦江区委组织部】".
    signature: str
    # pending, then approved or rejected; withdrawn when a later proposal replaced it.
    status: str
    # The tenant whose key proposed it (000000: the operator).
    proposed_by: str
    # While pending: the tenant whose approval it awaits (any tenant above that one may too).
    awaiting: str | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None
    created_at: datetime


class SignatureState(msgspec.Struct, frozen=True):
    tenant: str
    # What the tenant's sends go out under; null until a signature is approved.
    approved: str | None
    pending: Proposal | None
    # Its proposals, newest first (the latest 50).
    proposals: list[Proposal]


class ProposalList(msgspec.Struct, frozen=True):
    items: list[Proposal]
