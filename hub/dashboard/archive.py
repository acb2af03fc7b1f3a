"""The console's archive (档案记实): /dashboard/t/{code}/archive/{YYYY-MM} is the month's
printable page (print it to PDF for the filed copy), `….xlsx` its sheet and
/dashboard/t/{code}/archive/{YYYY}.zip the year's; `?subtree=true` for the notices of the whole
subtree. The same files as GET /v1/tenants/{code}/archive/{file}, read with the same scope
(messages:read); a closed month's are the stored bytes."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.params import FromPath, PathParameter

from hub.archive.controllers import Subtree, answer, fetch
from hub.dashboard import service
from hub.dashboard.controllers import PREFIX, PUBLIC, SessionMiddleware, Viewer, _viewer
from tenants.scopes import Data

# Checked by the service (hub.archive.service.parse_name): a bad name is its 422 page.
PageName = Annotated[str, PathParameter(max_length=100)]


class ArchivePages(Controller):
    path = PREFIX
    include_in_schema = False
    middleware = [DefineMiddleware(SessionMiddleware, exclude_from_auth_key=PUBLIC)]  # noqa: RUF012
    dependencies = {"who": Provide(_viewer)}  # noqa: RUF012

    @get("/t/{code:str}/archive/{name:str}")
    async def archive(
        self,
        request: Request[Any, Any, Any],
        state: State,
        who: Viewer,
        code: FromPath[str],
        name: PageName,
        subtree: Subtree = False,
    ) -> Response[bytes]:
        service.require(who, Data.MESSAGES, "查看发送档案")
        found = await fetch(request, state, who, code, name, subtree=subtree)
        return answer(found, inline=found.media_type.startswith("text/html"))
