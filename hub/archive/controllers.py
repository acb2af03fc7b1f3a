"""GET /v1/tenants/{code}/archive/{file}: a tenant's monthly archive (`YYYY-MM.xlsx`, the
printable page `YYYY-MM.html`) and a year's ZIP (`YYYY.zip`), read with messages:read
(`Data.MESSAGES`: the notices' texts) for the caller's own tenant or one below it; any other
code is the same 404 as everywhere, a malformed file name 422."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.params import PathParameter, QueryParameter

from hub import reads
from hub.archive import service
from hub.archive.schemas import FILE_PATTERN, ArchiveFile
from hub.db import Database
from hub.errors import error_responses
from hub.wire import HubResponse
from tenants.auth import require
from tenants.controllers import AuthedRequest, Code
from tenants.scopes import Data
from tenants.service import Principal

FileName = Annotated[
    str,
    PathParameter(
        max_length=100,
        pattern=FILE_PATTERN,
        description="`YYYY-MM.xlsx`, `YYYY-MM.html` (the printable page) or `YYYY.zip`",
    ),
]
Subtree = Annotated[
    bool,
    QueryParameter(description="The notices of the tenant's whole subtree, not only its own"),
]


PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def answer(found: ArchiveFile, *, inline: bool = False) -> Response[bytes]:
    """The file as a download (the page inline), with its SHA-256 and whether it is final."""
    disposition = "inline" if inline else "attachment"
    # The page needs nothing but its own inline style: no script, no request elsewhere.
    locked = {"Content-Security-Policy": PAGE_POLICY} if inline else {}
    return HubResponse(
        found.data,
        media_type=found.media_type,
        headers={
            "Content-Disposition": f'{disposition}; filename="{found.name}"',
            "X-Archive-Final": "true" if found.final else "false",
            "X-Content-SHA256": found.sha256,
            "Cache-Control": "private, no-cache",
            "X-Content-Type-Options": "nosniff",
            **locked,
        },
    )


class ArchiveController(Controller):
    path = "/v1/tenants/{code:str}/archive"
    tags = ["archive"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/{name:str}",
        guards=[require(Data.MESSAGES)],
        media_type="application/octet-stream",
        responses=error_responses(404, 422),
        summary="A month's archive (XLSX or printable HTML) or a year's ZIP with a manifest",
        description=(
            "A closed month (its billing period closed) answers the bytes stored at its first "
            "fetch, every time (`X-Archive-Final: true`); an open month is rendered now and "
            "says it is not final. The ZIP holds the year's closed months and `manifest.json` "
            "(each file's name, size and SHA-256)."
        ),
    )
    async def archive(
        self,
        request: AuthedRequest,
        state: State,
        code: Code,
        name: FileName,
        subtree: Subtree = False,
    ) -> Response[bytes]:
        found = await fetch(request, state, request.user, code, name, subtree=subtree)
        return answer(found, inline=found.media_type.startswith("text/html"))


async def fetch(
    request: Request[Any, Any, Any],
    state: State,
    who: Principal,
    code: str,
    name: str,
    *,
    subtree: bool,
) -> ArchiveFile:
    """The file, read where reads that may lag go (hub.reads: a standby when one is set); a
    closed month's first fetch, which stores its files, on the primary."""
    async with reads.reading(state, request.scope) as conn:
        try:
            return await service.fetch(
                conn, state.settings, who, code, name, subtree=subtree, store=False
            )
        except service.NotStored:
            pass
    reads.note(request.scope, "primary")
    db: Database = state.db
    async with db.acquire() as conn, conn.transaction():
        return await service.fetch(conn, state.settings, who, code, name, subtree=subtree)
