"""The console's operation log: /dashboard/t/{code}/operations, the same entries, filters and
pages as GET /v1/tenants/{code}/operations, read with the same scope
(READ_SCOPE[Data.OPERATIONS]), and its XLSX download. Only reads: nothing here writes the log."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.params import FromPath, QueryParameter
from litestar.response import Template

from hub.dashboard import service
from hub.dashboard.controllers import (
    PREFIX,
    PUBLIC,
    SessionMiddleware,
    Viewer,
    _page,
    _viewer,
)
from hub.oplog import exports
from hub.oplog import service as oplog
from hub.oplog.controllers import filters
from hub.oplog.schemas import Filters
from tenants.controllers import Conn
from tenants.scopes import Data

# The form's fields: text (an empty one is no filter), bounded before anything reads them.
Text = Annotated[str, QueryParameter(max_length=100)]
DateText = Annotated[str, QueryParameter(name="from", max_length=10)]
UntilText = Annotated[str, QueryParameter(name="to", max_length=10)]


def _chosen(since: str, until: str, actor: str, action: str, after: int | None = None) -> Filters:
    return filters(since or None, until or None, actor or None, action or None, after, 50)


def _query(chosen: Filters, **more: Any) -> str:
    fields = {
        "from": chosen.since.isoformat() if chosen.since else "",
        "to": chosen.until.isoformat() if chosen.until else "",
        "actor": chosen.actor or "",
        "action": chosen.action or "",
    }
    return urlencode({k: v for k, v in {**fields, **more}.items() if v})


class OperationPages(Controller):
    path = PREFIX
    include_in_schema = False
    middleware = [DefineMiddleware(SessionMiddleware, exclude_from_auth_key=PUBLIC)]  # noqa: RUF012
    dependencies = {"who": Provide(_viewer)}  # noqa: RUF012

    @get("/t/{code:str}/operations")
    async def operations(
        self,
        conn: Conn,
        who: Viewer,
        code: FromPath[str],
        since: DateText = "",
        until: UntilText = "",
        actor: Text = "",
        action: Text = "",
        after: Annotated[int | None, QueryParameter(ge=1, le=2**53)] = None,
    ) -> Template:
        service.require(who, Data.OPERATIONS, "查看操作日志")
        chosen = _chosen(since, until, actor, action, after)
        page = await oplog.page(conn, who, code, chosen)
        more = _query(chosen, after=page.next_after) if page.next_after else None
        return _page(
            "operations.html",
            who,
            code=code,
            page=page,
            chosen=chosen,
            next_query=more,
            download_query=_query(chosen),
        )

    # No request transaction (`conn`): the export reads on a connection of its own.
    @get("/t/{code:str}/operations.xlsx")
    async def operations_xlsx(
        self,
        state: State,
        who: Viewer,
        code: FromPath[str],
        since: DateText = "",
        until: UntilText = "",
        actor: Text = "",
        action: Text = "",
    ) -> Response[Any]:
        service.require(who, Data.OPERATIONS, "下载操作日志")
        chosen = _chosen(since, until, actor, action)
        return await exports.operations_xlsx(state.db, who, code, chosen)
