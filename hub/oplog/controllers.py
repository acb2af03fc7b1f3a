"""GET /v1/tenants/{code}/operations[.xlsx]: a tenant's operation log, read with
`tenants.scopes.READ_SCOPE[Data.OPERATIONS]` (tenants:write, 管理) for the caller's own tenant
or one below it; any other code is the same 404 as everywhere."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.params import QueryParameter

from hub.errors import error_responses
from hub.oplog import exports, service
from hub.oplog.schemas import ACTION_PATTERN, ACTOR_PATTERN, PAGE_MAX, Filters, OperationPage
from tenants.auth import require
from tenants.controllers import AuthedRequest, Code, Conn
from tenants.errors import Invalid
from tenants.scopes import Data

Since = Annotated[
    date | None, QueryParameter(name="from", description="First Beijing day, YYYY-MM-DD")
]
Until = Annotated[date | None, QueryParameter(name="to", description="Last Beijing day (included)")]
Actor = Annotated[
    str | None,
    QueryParameter(
        max_length=100, pattern=ACTOR_PATTERN, description="`user:<login>`, `key:<prefix>`…"
    ),
]
Action = Annotated[
    str | None,
    QueryParameter(
        max_length=100, pattern=ACTION_PATTERN, description="An action or its beginning: `quota.`"
    ),
]
After = Annotated[
    int | None,
    QueryParameter(ge=1, le=2**53, description="Cursor: the `next_after` of the previous page"),
]
Limit = Annotated[int, QueryParameter(ge=1, le=PAGE_MAX, description="Page size")]


def filters(
    since: date | str | None,
    until: date | str | None,
    actor: str | None,
    action: str | None,
    after: int | None = None,
    limit: int = 100,
) -> Filters:
    """The filters, checked by their Struct (the console's form sends its dates as text)."""
    raw = {"since": since, "until": until, "actor": actor, "action": action, "after": after}
    try:
        checked = msgspec.convert({**raw, "limit": limit}, Filters)
    except msgspec.ValidationError as exc:
        raise Invalid(f"bad filter: {exc}") from None
    if checked.since and checked.until and checked.since > checked.until:
        raise Invalid("`from` is after `to`")
    return checked


class OperationController(Controller):
    path = "/v1/tenants/{code:str}"
    tags = ["operations"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/operations",
        guards=[require(Data.OPERATIONS)],
        responses=error_responses(404, 422),
        summary="A tenant's operation log, newest first: who changed what, when, from where",
    )
    async def operations(
        self,
        request: AuthedRequest,
        conn: Conn,
        code: Code,
        since: Since = None,
        until: Until = None,
        actor: Actor = None,
        action: Action = None,
        after: After = None,
        limit: Limit = 100,
    ) -> OperationPage:
        chosen = filters(since, until, actor, action, after, limit)
        return await service.page(conn, request.user, code, chosen)

    # No request transaction (`conn`): the export reads on a connection of its own.
    @get(
        "/operations.xlsx",
        guards=[require(Data.OPERATIONS)],
        media_type=exports.MEDIA,
        responses=error_responses(404, 422),
        summary="The same entries (every page) as XLSX; text cells never run as formulas",
    )
    async def operations_xlsx(
        self,
        request: AuthedRequest,
        state: State,
        code: Code,
        since: Since = None,
        until: Until = None,
        actor: Actor = None,
        action: Action = None,
    ) -> Response[Any]:
        chosen = filters(since, until, actor, action)
        return await exports.operations_xlsx(state.db, request.user, code, chosen)
