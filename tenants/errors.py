"""The error family every API failure belongs to.

It lives here, in the lowest package, so that `tenants` can raise it without importing `hub`;
`hub.errors` maps it (and Litestar's own exceptions) to the one JSON shape
`{"error": code, "detail": text, ...}`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
from litestar.openapi.datastructures import ResponseSpec


class ApiError(Exception):
    """An error with an HTTP status and a machine-readable code."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class Invalid(ApiError):
    status_code = 422
    code = "invalid"


class Suspended(Forbidden):
    """The caller's tenant, or one above it, is suspended: its subtree may read, not act."""

    code = "suspended"


class ExtensionsExhausted(ApiError):
    """Every SMS extension is in use: no tenant can be created until the operator acts."""

    status_code = 503
    code = "extensions_exhausted"


class UnitsExhausted(Conflict):
    """The division already holds as many units as the hub allows one division."""

    code = "units_exhausted"


def tenant_not_found() -> NotFound:
    """The one answer for an unknown tenant and for one outside the caller's subtree.

    Identical bodies, so a caller cannot learn whether a code it may not see exists.
    """
    return NotFound("tenant not found")


class ErrorBody(msgspec.Struct, frozen=True):
    """The body of every error answer; some errors add fields (the quota level that ran out…)."""

    error: str
    detail: str


_DESCRIPTIONS = {
    400: "Malformed request (unparseable JSON or parameters)",
    401: "Missing, garbled or revoked API key",
    403: "The key lacks the scope this endpoint needs, or (`suspended`) its tenant or one above"
    " it is suspended: the subtree may read but not send, create keys or units, or change quota",
    404: "Not found, or not in the caller's subtree",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Well-formed but invalid input; `fields` names what is wrong",
    429: "Quota or rate limit reached",
    503: "The hub cannot do this now (`extensions_exhausted`: every SMS extension is in use)",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error answers a route can give (401/403 are always possible)."""
    wanted = sorted({400, 401, 403, *statuses})
    return {
        status: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS[status])
        for status in wanted
    }
