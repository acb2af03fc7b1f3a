"""Authentication by API key, and scope guards.

The middleware finds connections at `app.state.db`, an object with an async `acquire()` context
manager (hub's `Database`): that attribute is the whole contract between `hub` and this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from tenants.errors import Forbidden, Unauthorized
from tenants.key_cache import KeyCache
from tenants.keys import parse_token
from tenants.scopes import Needs, Scope, grants, named, reviewing, scope_for
from tenants.service import Principal, authenticate, refuse_if_suspended

# Routes anyone may call: health, metrics and the API's own documentation.
PUBLIC_PATHS = ["^/healthz", "^/readyz", "^/metrics", "^/schema", "^/docs"]
# Methods that only read: a suspended subtree may still call them.
READS = frozenset({"GET", "HEAD", "OPTIONS"})
# The `opt` of a route that only stops or withdraws something (revoke a key, cancel a send, stop
# a campaign, drop a webhook): a suspended subtree may still call it.
STOPS = {"stops": True}


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """`Authorization: Bearer hub_<prefix>_<secret>` → `request.user` is a Principal.

    Looked up in PostgreSQL, or in the process's KeyCache (`app.state.key_cache`, when the app
    keeps one: tenants.key_cache), whose entries go as their key or any tenant changes.
    """

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        raw = _bearer(connection.headers.get("authorization"))
        if raw is None:
            raise Unauthorized("missing API key: send `Authorization: Bearer hub_…`")
        cache: KeyCache | None = getattr(connection.app.state, "key_cache", None)
        token = parse_token(raw)
        principal = None if cache is None or token is None else cache.get(token)
        if principal is None:
            generation = 0 if cache is None else cache.generation
            async with connection.app.state.db.acquire() as conn:
                principal = await authenticate(conn, raw)
            if principal is not None and cache is not None and token is not None:
                cache.put(token, principal, generation)
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        principal = msgspec.structs.replace(principal, address=client_address(connection))
        return AuthenticationResult(user=principal, auth=principal.key_prefix)


# An address longer than this is not one (IPv6 with a zone is under 64 characters).
ADDRESS_MAX = 100


def client_address(connection: ASGIConnection) -> str | None:  # type: ignore[type-arg]
    """The caller's address as the ASGI server hands it over: the socket's peer, or, behind a
    proxy the server trusts (HUB_HTTP__TRUSTED_PROXIES, given to uvicorn as its
    forwarded-allow-ips), the address that proxy forwarded. Never read from a header here: a
    client writes any header it likes."""
    client = connection.client
    if client is None or not client.host:
        return None
    return client.host[:ADDRESS_MAX]


# Async: Litestar runs a plain function guard in its thread pool (a hand-off to a thread and
# back on every request, 0.1 ms or so of a 1-recipient send's CPU), and these never block.
Guard = Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]  # type: ignore[type-arg]


def require(need: Needs) -> Guard:
    """A route guard: the key must hold the scope `need` is (or is read with; of several needs,
    any one), else 403; and a route that writes (any method but a read, unless the route is
    marked STOPS) refuses a suspended subtree's key, 403 naming the suspended tenant. Every API
    route has this guard (or `require_review`), so this is the one place where suspension stops
    writes."""

    async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        _check(connection, handler, need)

    guard.__name__ = f"require_{scope_for(need).name.lower()}"
    return guard


def require_review(before: Scope) -> Guard:
    """`require` for deciding a proposal: reviews:write, or for an API key also `before`, the
    scope the route took before reviews:write existed (tenants.scopes.reviewing)."""

    async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        principal: Principal = connection.user
        _check(connection, handler, reviewing(before, key=principal.key_id is not None))

    guard.__name__ = "require_reviews_write"
    return guard


def _check(connection: ASGIConnection, handler: BaseRouteHandler, need: Needs) -> None:  # type: ignore[type-arg]
    principal: Principal = connection.user
    if not grants(principal.scopes, need):
        raise Forbidden(f"this key lacks the {named(need)} scope", scope=scope_for(need).value)
    if connection.scope.get("method") not in READS and not handler.opt.get("stops"):
        refuse_if_suspended(principal)
