"""Delivery API bodies: callback results, replies, webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec


class RecentReply(msgspec.Struct, frozen=True):
    """A reply to a tenant, as its dashboard lists it."""

    id: int
    phone: str
    text: str
    opt_out: bool
    received_at: datetime


class OptOut(msgspec.Struct, frozen=True):
    """A phone that opted out of a tenant's messages, and since when."""

    phone: str
    created_at: datetime


class InboundView(msgspec.Struct, frozen=True):
    id: int
    tenant: str
    phone: str
    address: str  # what it was sent to: the service number, the tenant's extension, anything more
    text: str
    opt_out: bool  # T, TD, 退订, 取消 or N: the phone no longer gets this tenant's messages
    gateway: str
    received_at: datetime
    # The send it answers: the tenant's newest send to this phone that asked for a reply and
    # went within HUB_DELIVERY__REPLY_WINDOW_SECONDS before it; null if none did.
    send_id: int | None = None


class InboundPage(msgspec.Struct, frozen=True):
    items: list[InboundView]
    next_after: int | None


class WebhookSetting(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://[!-~]+(?!\n)$", max_length=2000)]
    # Signs each push: X-Hub-Signature = hex HMAC-SHA256(secret, "<timestamp>.<body>").
    secret: Annotated[str, msgspec.Meta(min_length=16, max_length=200)]


class WebhookView(msgspec.Struct, frozen=True):
    url: str
    updated_at: datetime
