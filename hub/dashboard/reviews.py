"""The console's templates, signatures and review queue: /dashboard/templates (propose one,
see each one's status and the reviewer's note), /dashboard/signatures (propose a tenant's
signature, see its proposals), /dashboard/reviews (what tenants below wait for the signed-in
person to decide, approve or reject with a note: templates, signatures, and sends caught by a
review rule or urgent ones to review after the fact, decided by hub.messages.review as the API's
/v1/reviews does).

Every form calls the service the JSON API calls (hub.templates.service, hub.signatures.service),
validates with the API's own Structs and asks the same scopes: proposing a template
messages:write, a signature tenants:write, deciding reviews:write (service.reviewing, as the
API's require_review: an operator key may still use the route's older scope). The services write the
operation log. A tenant not in the signed-in subtree is 404, as on the API."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.params import Parameter
from litestar.response import Redirect, Template

from hub.dashboard import service
from hub.dashboard.controllers import (
    PREFIX,
    PUBLIC,
    CodeQuery,
    Form,
    SessionMiddleware,
    Viewer,
    _page,
    _viewer,
    form_as,
    same_origin,
    shown_on_page,
)
from hub.dashboard.schemas import ReviewForm, SignatureForm, TemplateForm
from hub.db import Database
from hub.delivery import service as delivery
from hub.errors import ApiError, Invalid
from hub.messages import review
from hub.reviews import service as reviews
from hub.reviews.schemas import Decision, Rejection
from hub.signatures import service as signatures
from hub.signatures.schemas import ProposeSignature
from hub.templates import service as templates
from hub.templates.schemas import CreateTemplate, Review
from tenants import service as tenants
from tenants.controllers import Conn
from tenants.scopes import Scope
from tenants.service import Principal

ItemId = Annotated[int, Parameter(ge=1, le=2**53)]
# Sends of each review queue shown on the page (oldest first); the API pages through all.
SENDS_SHOWN = 200


class ReviewPages(Controller):
    path = PREFIX
    include_in_schema = False
    middleware = [DefineMiddleware(SessionMiddleware, exclude_from_auth_key=PUBLIC)]  # noqa: RUF012
    dependencies = {"who": Provide(_viewer)}  # noqa: RUF012

    # --- templates -----------------------------------------------------------------------

    @get("/templates")
    async def templates_page(self, conn: Conn, who: Viewer) -> Template:
        return await _templates_page(conn, who)

    @post("/templates", status_code=303)
    async def propose_template(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        who: Viewer,
        data: Annotated[TemplateForm, Form],
    ) -> Response[Any]:
        same_origin(request)
        service.require(who, Scope.MESSAGES_WRITE, "提交模板")
        try:
            tenants.refuse_if_suspended(who)
            form = form_as(CreateTemplate, {"name": data.name, "body": data.body})
            async with conn.transaction():
                made = await templates.create(conn, who, await tenants.own(conn, who), form)
        except ApiError as exc:
            if not shown_on_page(exc):
                raise
            return await _templates_page(conn, who, exc.status_code, error=exc.detail, form=data)
        return Redirect(f"{PREFIX}/templates?saved={made.id}", status_code=303)

    # --- signatures ----------------------------------------------------------------------

    @get("/signatures")
    async def signatures_page(self, conn: Conn, who: Viewer, tenant: CodeQuery = "") -> Template:
        return await _signatures_page(conn, who, tenant or who.tenant_code)

    @post("/signatures", status_code=303)
    async def propose_signature(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        who: Viewer,
        data: Annotated[SignatureForm, Form],
    ) -> Response[Any]:
        same_origin(request)
        service.require(who, Scope.TENANTS_WRITE, "提交签名")
        code = data.tenant or who.tenant_code
        tenant = await tenants.get_visible(conn, who, code)  # 404 before anything else
        try:
            tenants.refuse_if_suspended(who)
            form = form_as(ProposeSignature, {"signature": data.signature})
            async with conn.transaction():
                await signatures.propose(conn, who, tenant, form.signature)
        except ApiError as exc:
            if not shown_on_page(exc):
                raise
            return await _signatures_page(
                conn, who, code, exc.status_code, error=exc.detail, form=data
            )
        return Redirect(f"{PREFIX}/signatures?tenant={tenant.code}", status_code=303)

    # --- the review queue ----------------------------------------------------------------

    @get("/reviews")
    async def reviews_page(self, conn: Conn, who: Viewer) -> Template:
        _may_review(who)
        return await _reviews_page(conn, who)

    @post("/reviews/templates/{item_id:int}", status_code=303)
    async def review_template(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        who: Viewer,
        item_id: ItemId,
        data: Annotated[ReviewForm, Form],
    ) -> Response[Any]:
        same_origin(request)
        service.require(who, service.reviewing(who, "template"), "审核模板")
        return await _decide(conn, who, "template", item_id, data)

    @post("/reviews/sends/{item_id:int}", status_code=303)
    async def review_send(
        self,
        request: Request[Any, Any, State],
        who: Viewer,
        item_id: ItemId,
        data: Annotated[ReviewForm, Form],
    ) -> Response[Any]:
        same_origin(request)
        service.require(who, Scope.REVIEWS_WRITE, "审核发送")
        state: State = request.app.state
        db: Database = state.db
        try:
            if data.decision == "approve":
                tenants.refuse_if_suspended(who)
            # Its own transaction, as the API's: a queued send is enqueued once it commits.
            now: str = "cancelled"
            async with db.acquire() as own, own.transaction():
                if data.decision == "approve":
                    approval = form_as(Decision, {"note": data.note})
                    now = await review.approve(own, who, item_id, approval, state.settings)
                elif data.decision == "reject":
                    rejection = form_as(Rejection, {"note": data.note})
                    await review.reject(own, who, item_id, rejection)
                else:
                    raise Invalid("decision: approve or reject")
        except ApiError as exc:
            if not shown_on_page(exc):
                raise
            async with db.acquire() as conn:
                return await _reviews_page(conn, who, exc.status_code, error=exc.detail)
        if now == "queued":
            await delivery.enqueue_send(db, state.redis, state.settings.delivery, item_id)
        return Redirect(f"{PREFIX}/reviews?decided=send:{item_id}", status_code=303)

    @post("/reviews/signatures/{item_id:int}", status_code=303)
    async def review_signature(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        who: Viewer,
        item_id: ItemId,
        data: Annotated[ReviewForm, Form],
    ) -> Response[Any]:
        same_origin(request)
        service.require(who, service.reviewing(who, "signature"), "审核签名")
        return await _decide(conn, who, "signature", item_id, data)


def _may_review(who: Principal) -> None:
    if not service.may_review(who):
        service.require(who, service.reviewing(who, "template"), "审核模板和签名")


async def _decide(
    conn: asyncpg.Connection, who: Principal, kind: str, item_id: int, data: ReviewForm
) -> Response[Any]:
    try:
        tenants.refuse_if_suspended(who)
        decision = form_as(Review, {"decision": data.decision, "note": data.note})
        async with conn.transaction():
            if kind == "template":
                await templates.review(conn, who, item_id, decision)
            else:
                await signatures.review(conn, who, item_id, decision)
    except ApiError as exc:
        if not shown_on_page(exc):
            raise
        return await _reviews_page(conn, who, exc.status_code, error=exc.detail)
    return Redirect(f"{PREFIX}/reviews?decided={kind}:{item_id}", status_code=303)


async def _templates_page(
    conn: asyncpg.Connection,
    who: Principal,
    status: int = 200,
    *,
    error: str | None = None,
    form: TemplateForm | None = None,
) -> Template:
    tenant = await tenants.own(conn, who)
    own = await templates.list_templates(conn, tenant, False, None)
    return _page("templates.html", who, status, tenant=tenant, items=own, error=error, form=form)


async def _signatures_page(
    conn: asyncpg.Connection,
    who: Principal,
    code: str,
    status: int = 200,
    *,
    error: str | None = None,
    form: SignatureForm | None = None,
) -> Template:
    tenant = await tenants.get_visible(conn, who, code)
    state = await signatures.state(conn, tenant)
    return _page("signatures.html", who, status, tenant=tenant, state=state, error=error, form=form)


async def _reviews_page(
    conn: asyncpg.Connection, who: Principal, status: int = 200, *, error: str | None = None
) -> Template:
    pending_templates = await templates.pending_for(conn, who)
    pending_signatures = await signatures.pending_for(conn, who)
    may_sends = service.may(who, Scope.REVIEWS_WRITE)
    sends = after = None
    if may_sends:
        sends = await reviews.queue(conn, who, "review", None, 0, SENDS_SHOWN)
        after = await reviews.queue(conn, who, "after", None, 0, SENDS_SHOWN)
    return _page(
        "reviews.html",
        who,
        status,
        templates=pending_templates,
        signatures=pending_signatures,
        sends=sends.items if sends else [],
        after=after.items if after else [],
        may_sends=may_sends,
        error=error,
        may_templates=service.may(who, service.reviewing(who, "template")),
        may_signatures=service.may(who, service.reviewing(who, "signature")),
    )
