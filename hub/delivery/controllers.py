"""Delivery routes: gateways' receipt and reply callbacks; a tenant's replies and webhook."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, put, route
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from hub.delivery import gateways, service, webhooks
from hub.delivery import repository as sql
from hub.delivery.gateway import Gateway, HttpCallback
from hub.delivery.schemas import InboundPage, InboundView, WebhookSetting, WebhookView
from hub.errors import error_responses
from hub.settings import GatewayConfig
from hub.wire import HubResponse
from tenants.auth import STOPS, require
from tenants.controllers import AuthedRequest, Code, Conn
from tenants.errors import ApiError, NotFound, Unauthorized
from tenants.scopes import Data, Scope

GatewayName = Annotated[str, PathParameter(pattern=r"^[a-z][a-z0-9_-]{0,31}(?!\n)$", max_length=32)]
SECRET_HEADER = "x-hub-gateway-secret"
log = logging.getLogger(__name__)
CallbackRequest = Request[None, None, State]
# A gateway's push of receipts or replies: Alibaba pushes JSON arrays of a few hundred receipts
# (~300 bytes each); Kannel calls with a query string. 1 MiB holds several thousand.
MAX_CALLBACK_BYTES = 1024 * 1024


class BadCallback(ApiError):
    status_code = 400
    code = "bad_callback"


def _gateway(state: State, name: str, request: CallbackRequest) -> Gateway:
    """The gateway named in the path, once the caller proved it knows its secret."""
    if "callback_parsers" not in state:
        # The adapters, as parsers of their own callbacks: building one opens no connection.
        state.callback_parsers = {
            g.name: gateways.build(g, state.db) for g in state.settings.delivery.gateways
        }
    gateway: Gateway | None = state.callback_parsers.get(name)
    if gateway is None:
        raise NotFound(f"no gateway named {name!r}")
    given = request.headers.get(SECRET_HEADER) or request.query_params.get("secret") or ""
    if not knows_secret(gateway.config, given):
        raise Unauthorized(f"wrong or missing secret for gateway {name!r}")
    return gateway


def knows_secret(config: GatewayConfig, given: str) -> bool:
    """Whether `given` is the gateway's secret or one of its previous ones (kept while a
    rotation is under way). Each is compared in constant time, and all of them every time, so
    the answer's timing says neither which one matched nor how much of one did."""
    taken = [s for s in (config.secret, *config.previous_secrets) if s]
    matches = [hmac.compare_digest(given.encode(), s.encode()) for s in taken]
    return any(matches)


async def _callback(
    request: CallbackRequest, name: str, kind: Literal["receipts", "inbound"]
) -> Response[bytes]:
    state = request.app.state
    gateway = _gateway(state, name, request)
    call = HttpCallback(
        method=request.method,
        query={k: v for k, v in request.query_params.items() if k != "secret"},
        headers=dict(request.headers),
        body=await request.body(),
    )
    try:
        parsed = gateway.parse_callback(kind, call)
    except ValueError as exc:  # msgspec's errors are ValueErrors too
        raise BadCallback(f"unreadable {kind} callback from {name}: {exc}") from exc
    for bad in parsed.rejected:  # %r: a reason may quote what the caller sent
        log.warning("gateway %s: %s item %d refused: %r", name, kind, bad.index, bad.reason)
    if parsed.rejected and not (parsed.receipts or parsed.replies):
        # Nothing to record: say so to the gateway. One bad item among good ones is answered
        # as the gateway's success instead, naming the bad one where its answer has room.
        first = parsed.rejected[0]
        raise BadCallback(
            f"nothing in this {kind} callback from {name} could be taken "
            f"(item {first.index}: {first.reason})",
            rejected=msgspec.to_builtins(parsed.rejected),
        )
    # The same recorder a gateway's own connection pushes to (SMPP, the outbox).
    recorder = service.Recorder(state.db, state.settings, state.redis, state.tally)
    if parsed.receipts:
        await recorder.receipts(name, parsed.receipts)
    if parsed.replies:
        await recorder.inbound(name, parsed.replies)
    answer = parsed.answer  # the gateway's own bytes, written as they are
    return HubResponse(answer.body, status_code=answer.status, media_type=answer.media_type)


class GatewayCallbackController(Controller):
    """Called by gateways, not tenants: authenticated by the gateway's own secret (query
    `secret=` or header `X-Hub-Gateway-Secret`), answered the way each gateway expects."""

    path = "/v1/gateways/{name:str}"
    tags = ["gateways"]  # noqa: RUF012 - Litestar reads it as a class attribute
    request_max_body_size = MAX_CALLBACK_BYTES

    @route(
        "/receipts",
        http_method=["GET", "POST"],
        responses=error_responses(400, 401, 404, 413),
        summary="Delivery receipts from a gateway (Kannel's dlr-url, Alibaba's push)",
    )
    async def receipts(self, request: CallbackRequest, name: GatewayName) -> Response[bytes]:
        return await _callback(request, name, "receipts")

    @route(
        "/inbound",
        http_method=["GET", "POST"],
        responses=error_responses(400, 401, 404, 413),
        summary="Replies (mobile-originated messages) from a gateway",
    )
    async def inbound(self, request: CallbackRequest, name: GatewayName) -> Response[bytes]:
        return await _callback(request, name, "inbound")


class InboundController(Controller):
    path = "/v1"
    tags = ["inbound"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/inbound",
        guards=[require(Data.REPLIES)],
        responses=error_responses(422),
        summary="Replies to the caller's tenant (and, with subtree=true, its descendants)",
    )
    async def list_inbound(
        self,
        request: AuthedRequest,
        conn: Conn,
        after: Annotated[int, QueryParameter(ge=0, le=2**53)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        subtree: Annotated[bool, QueryParameter(description="include descendants")] = False,
    ) -> InboundPage:
        who = request.user
        records = await conn.fetch(sql.INBOUND_PAGE, who.tenant_path, subtree, after, limit + 1)
        items = [msgspec.convert(dict(r.items()), InboundView) for r in records[:limit]]
        more = len(records) > limit
        return InboundPage(items=items, next_after=items[-1].id if more and items else None)

    @put(
        "/tenants/{code:str}/webhook",
        guards=[require(Scope.MESSAGES_WRITE)],
        responses=error_responses(403, 404, 422),
        status_code=HTTP_204_NO_CONTENT,
        summary="Where the tenant's replies are pushed, HMAC-SHA256 signed with its secret",
    )
    async def set_webhook(
        self,
        request: AuthedRequest,
        conn: Conn,
        state: State,
        code: Code,
        data: JSONBody[WebhookSetting],
    ) -> None:
        private_ok = state.settings.delivery.webhooks_private_ok
        await webhooks.set_webhook(conn, request.user, code, data, private_ok)

    @get(
        "/tenants/{code:str}/webhook",
        guards=[require(Scope.MESSAGES_READ)],
        responses=error_responses(403, 404),
        summary="The tenant's webhook URL (never its secret); 404 if it has none",
    )
    async def get_webhook(self, request: AuthedRequest, conn: Conn, code: Code) -> WebhookView:
        found = await webhooks.current(conn, request.user, code)
        if found is None:
            raise NotFound(f"{code} has no webhook")
        return found

    @delete(
        "/tenants/{code:str}/webhook",
        guards=[require(Scope.MESSAGES_WRITE)],
        responses=error_responses(403, 404),
        status_code=HTTP_204_NO_CONTENT,
        opt=STOPS,
        summary="Stop pushing replies: the webhook and its pending pushes go (repeats are fine)",
    )
    async def delete_webhook(self, request: AuthedRequest, conn: Conn, code: Code) -> None:
        await webhooks.delete_webhook(conn, request.user, code)
