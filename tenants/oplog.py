"""The operation log as tenancy sees it: a port its routes write to.

The log itself is hub's (hub/oplog); tenancy's routes that change something (units, keys, a
tenant's name or status) are given the recorder the app provides as the dependency `oplog`,
in the request's transaction, so `tenants` never imports `hub`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import asyncpg

from tenants.service import Principal


@runtime_checkable  # Litestar checks what it injects against the annotation
class OperationLog(Protocol):
    async def record(
        self,
        conn: asyncpg.Connection,
        by: Principal,
        action: str,
        *,
        tenant_id: int,
        object: str | None = None,  # the log's own word for what was acted on
        before: Any = None,
        after: Any = None,
        detail: Any = None,
    ) -> None:
        """Append an entry: `by` did `action` to `object` of the tenant `tenant_id`."""
        ...
