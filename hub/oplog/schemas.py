"""Operation log shapes: an entry as the API and the page show it, and the filters they take."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import msgspec

# What the filters accept: an actor as `Principal.actor` writes it, an action or its beginning.
ACTOR_PATTERN = r"^(user|key|cli|system):[A-Za-z0-9._@:-]{1,80}(?!\n)$"
ACTION_PATTERN = r"^[a-z_]{1,30}(\.[a-z_]{0,30}){0,2}(?!\n)$"
PAGE_MAX = 500


class Filters(msgspec.Struct, frozen=True, kw_only=True):
    """One page's question. Dates are Beijing's days, both included."""

    since: date | None = None
    until: date | None = None
    actor: Annotated[str, msgspec.Meta(max_length=100, pattern=ACTOR_PATTERN)] | None = None
    action: Annotated[str, msgspec.Meta(max_length=100, pattern=ACTION_PATTERN)] | None = None
    after: Annotated[int, msgspec.Meta(ge=1, le=2**53)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=PAGE_MAX)] = 100


class Operation(msgspec.Struct, frozen=True):
    id: int
    at: datetime
    # The tenant whose data changed.
    tenant: str
    # `user:<login>`, `key:<prefix>`, `cli:<user>` or `system:<what>`.
    actor: str
    # The acting person's or key's tenant (null for the CLI and the hub's own jobs).
    actor_tenant: str | None
    # The client's address as the server saw it (null where there was none: CLI, jobs).
    address: str | None
    # A short code: `quota.set`, `send.create`, `key.revoke`…
    action: str
    # What it acted on: `send:123`, `key:0a1b…`, `tenant:510104`…
    object: str | None
    # A setting as it was and as it became (never a secret); other facts of the change.
    before: Any | None
    after: Any | None
    detail: Any | None


class OperationPage(msgspec.Struct, frozen=True):
    items: list[Operation]
    # Pass as `after` for the next page; null on the last one.
    next_after: int | None
