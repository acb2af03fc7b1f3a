"""Every failure answers `{"error": code, "detail": text, ...}` with the right status.

Our own errors are the `ApiError` family (defined in `tenants.errors` so the tenancy package can
raise them without importing hub); Litestar's own exceptions are translated here, once:
unparseable JSON is 400 `malformed`, a body or parameter that parses but does not validate is
422 `invalid` with the offending `fields`. A server that is gone (PostgreSQL, Redis) or a
conflict that persisted is 503 with Retry-After (`outage`, which the dashboard's pages share),
never a 500.
"""

from __future__ import annotations

import logging
import re
from typing import Any, NamedTuple

import asyncpg
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import ExceptionHandlersMap

from hub.db import TRANSIENT, UNREACHABLE, unreachable
from hub.queue import REDIS_UNREACHABLE
from hub.wire import HubResponse
from tenants.errors import (
    ApiError,
    Conflict,
    ErrorBody,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
    error_responses,
)

__all__ = [
    "ApiError",
    "BodyTimeout",
    "ClientGone",
    "Conflict",
    "ErrorBody",
    "Forbidden",
    "Invalid",
    "Malformed",
    "NotFound",
    "Outage",
    "RateLimited",
    "TooLarge",
    "TooManyRequests",
    "Unauthorized",
    "error_responses",
    "exception_handlers",
    "outage",
]

log = logging.getLogger("hub.errors")

_HTTP_CODES = {
    400: "malformed",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}
# msgspec's own words for input it could not parse at all (as opposed to parse but reject).
_MALFORMED = re.compile(
    r"malformed|invalid json|truncated|unexpected character|input data was", re.I
)


class Malformed(ApiError):
    status_code = 400
    code = "malformed"


class TooLarge(ApiError):
    status_code = 413
    code = "too_large"


class ClientGone(ApiError):
    """The client closed its connection before the hub had read its request's body: nobody
    reads the answer and nothing went wrong in the hub, so no server error is logged (a client
    that hangs up mid-upload, again and again, must not fill the log with tracebacks)."""

    status_code = 499  # nginx's "client closed request"
    code = "client_gone"


class BodyTimeout(ApiError):
    """The request's body stopped coming for HUB_HTTP__BODY_TIMEOUT_SECONDS."""

    status_code = 408
    code = "timeout"


class TooManyRequests(ApiError):
    status_code = 429
    code = "rate_limited"


class RateLimited(TooManyRequests):
    """A request-rate limit refused the request; `headers` say when to come back."""

    def __init__(self, detail: str, headers: dict[str, str], **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers = headers


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[Any]:
    return HubResponse(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    headers = exc.headers if isinstance(exc, RateLimited) else None
    return _json(exc.status_code, {"error": exc.code, "detail": exc.detail, **exc.extra}, headers)


_FIELD_IN_MESSAGE = re.compile(r"field `([^`]+)`|at `\$\.([^`]+)`")


def _fields(extra: Any) -> list[dict[str, str]]:
    """Litestar's validation `extra` ([{message, key, source}]) as our `fields` list.

    For a body, Litestar names the whole body `data`; msgspec's message names the field
    ("missing required field `name`", "… - at `$.scopes[0]`"), so we take the name from there.
    """
    items = extra if isinstance(extra, list) else [extra] if isinstance(extra, dict) else []
    fields = []
    for item in items:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", ""))
        key = str(item.get("key", ""))
        source = item.get("source", "")
        source = str(getattr(source, "value", source))
        named = _FIELD_IN_MESSAGE.search(message)
        if key == "data" and named:
            key = named[1] or named[2]
        fields.append({"key": key, "message": message, "source": source})
    return fields


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    fields = _fields(exc.extra)
    messages = " ".join(f["message"] for f in fields) or str(exc.detail)
    if any(f["key"] == "data" and f["message"] == "'data'" for f in fields):
        return _json(400, {"error": "malformed", "detail": "request body is missing"})
    if _MALFORMED.search(messages) or _MALFORMED.search(str(exc.detail)):
        detail = f"request body is not valid JSON: {messages}"
        return _json(400, {"error": "malformed", "detail": detail})
    detail = "; ".join(f"{f['key'] or f['source']}: {f['message']}" for f in fields)
    return _json(422, {"error": "invalid", "detail": detail or str(exc.detail), "fields": fields})


def _too_large(request: Request[Any, Any, Any]) -> Response[Any]:
    """413 naming the route's limit: each route's is sized to its largest legal body."""
    limit = request.route_handler.resolve_request_max_body_size()
    route = f"{request.method} {request.scope.get('path_template', request.url.path)}"
    detail = f"the request body is over {limit} bytes, the most {route} accepts"
    return _json(413, {"error": "too_large", "detail": detail, "limit_bytes": limit})


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, RequestEntityTooLarge):
        return _too_large(request)
    status = exc.status_code
    if status >= 500:
        log.error("server error: %s", exc.detail, exc_info=exc)
    code = _HTTP_CODES.get(status, "error")
    return _json(status, {"error": code, "detail": str(exc.detail)}, headers=exc.headers)


def _unhandled(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(500, {"error": "internal", "detail": "internal server error"})


class Outage(NamedTuple):
    """A 503: nothing is wrong with the request, and the same request a moment later may pass."""

    code: str
    detail: str
    retry_after: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


# How long a client should wait after a statement ran out of time: the load that made it slow
# does not pass in a second.
RETRY_AFTER_SLOW = 30
# How long a client should wait when a server is gone: `hub up` restarts a dead embedded server
# within a few seconds; a managed PostgreSQL fails over in about as long.
RETRY_AFTER_UNAVAILABLE = 5


def outage(exc: BaseException) -> Outage | None:
    """The 503 an exception means, if it means one: the one mapping the API and the dashboard's
    pages share."""
    if isinstance(exc, TRANSIENT):
        # A deadlock or serialization failure that persisted through its tries (hub.db.retrying,
        # quota_take).
        detail = "the hub is busy with a conflicting change; try again in a moment"
        return Outage("busy", detail, 1)
    if isinstance(exc, asyncpg.exceptions.QueryCanceledError):
        # A statement over HUB_DB__STATEMENT_TIMEOUT (its transaction rolled back): the database
        # is too busy for this request now, e.g. a million-recipient send while others deliver.
        detail = "the database took too long on this request and undid it; try again later"
        return Outage("busy", detail, RETRY_AFTER_SLOW)
    if isinstance(exc, REDIS_UNREACHABLE):
        detail = "Redis is unreachable; try again in a moment"
        return Outage("unavailable", detail, RETRY_AFTER_UNAVAILABLE)
    if unreachable(exc):
        detail = "PostgreSQL is unreachable; try again in a moment"
        return Outage("unavailable", detail, RETRY_AFTER_UNAVAILABLE)
    return None


def _outage(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    found = outage(exc)
    if found is None:  # an InterfaceError that is our misuse, not a closed connection
        return _unhandled(request, exc)
    log.warning("%s %s: 503 %s: %r", request.method, request.url.path, found.code, exc)
    return _json(503, {"error": found.code, "detail": found.detail}, headers=found.headers)


def exception_handlers() -> ExceptionHandlersMap:
    outages: ExceptionHandlersMap = dict.fromkeys(
        (
            TRANSIENT,
            asyncpg.exceptions.QueryCanceledError,
            *UNREACHABLE,
            asyncpg.exceptions.InterfaceError,
            # A connection PostgreSQL's shutdown left unusable (hub.db.unreachable), or misuse.
            asyncpg.exceptions.InternalClientError,
            *REDIS_UNREACHABLE,
        ),
        _outage,
    )
    return {
        ApiError: _api_error,
        **outages,
        ValidationException: _validation,
        HTTPException: _http,
        Exception: _unhandled,
    }
