"""Review routes (审核): a tenant's review rule, the queue of sends waiting for a reviewer, and
the decisions on them (hub.messages.review)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post, put
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK

from hub.db import Database
from hub.delivery import service as delivery
from hub.errors import error_responses
from hub.messages import review
from hub.messages import service as messages
from hub.messages.schemas import SendView
from hub.oplog import service as oplog
from hub.reviews import service
from hub.reviews.schemas import (
    Decision,
    Rejection,
    ReviewPage,
    RuleSetting,
    RuleView,
    Waiting,
)
from tenants import service as tenants
from tenants.auth import STOPS, require
from tenants.controllers import AuthedRequest, Code, Conn
from tenants.scopes import Scope

SendId = Annotated[int, PathParameter(ge=1, le=2**53, description="The send's id")]


class ReviewRuleController(Controller):
    path = "/v1/tenants/{code:str}/review-rule"
    tags = ["reviews"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/",
        guards=[require(Scope.TENANTS_READ)],
        responses=error_responses(404),
        summary="A tenant's review rule, and every rule that binds its sends",
    )
    async def get_rule(self, request: AuthedRequest, conn: Conn, code: Code) -> RuleView:
        tenant = await tenants.get_visible(conn, request.user, code)
        return await service.rule_view(conn, tenant)

    @put(
        "/",
        guards=[require(Scope.TENANTS_WRITE)],
        responses=error_responses(404, 413, 422),
        summary="Set a tenant's review rule (the tenant itself or a tenant above it)",
        description="`none`, `free_text` (every send whose body is not an approved template) "
        "or `above` with a recipient threshold; `subtree: true` binds every tenant below too. "
        "A send is caught when any rule binding it catches it.",
    )
    async def set_rule(
        self, request: AuthedRequest, conn: Conn, code: Code, data: JSONBody[RuleSetting]
    ) -> RuleView:
        tenant = await tenants.get_visible(conn, request.user, code)
        before = await service.rule_view(conn, tenant)
        await service.set_rule(conn, request.user, tenant, data)
        after = await service.rule_view(conn, tenant)
        await oplog.record(
            conn,
            request.user,
            "review_rule.set",
            tenant_id=tenant.id,
            before={"rule": before.rule, "above": before.above, "subtree": before.subtree},
            after={"rule": after.rule, "above": after.above, "subtree": after.subtree},
        )
        return after


class ReviewController(Controller):
    path = "/v1/reviews"
    tags = ["reviews"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/",
        guards=[require(Scope.REVIEWS_WRITE)],
        responses=error_responses(404, 422),
        summary="Sends of the caller's subtree waiting for its decision (never its own), by id",
    )
    async def queue(
        self,
        request: AuthedRequest,
        conn: Conn,
        waiting: Annotated[
            Waiting,
            QueryParameter(
                description="review: waiting before they go; after: urgent sends that went at "
                "once, to be reviewed after the fact"
            ),
        ] = "review",
        tenant: Annotated[
            str | None,
            QueryParameter(
                pattern=r"^[0-9]{6,12}$", description="only this tenant of the subtree and below"
            ),
        ] = None,
        after: Annotated[int, QueryParameter(ge=0, le=2**53)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> ReviewPage:
        of = await tenants.get_visible(conn, request.user, tenant) if tenant else None
        return await service.queue(conn, request.user, waiting, of, after, limit)

    @post(
        "/{send_id:int}/approve",
        guards=[require(Scope.REVIEWS_WRITE)],
        responses=error_responses(403, 404, 409, 413, 422),
        status_code=HTTP_200_OK,
        summary="Approve a send waiting in review: it goes as if sent now",
    )
    async def approve(
        self, request: AuthedRequest, state: State, send_id: SendId, data: JSONBody[Decision]
    ) -> SendView:
        # Its own transaction, as a send's: a queued send is enqueued once it commits.
        db: Database = state.db
        async with db.acquire() as conn, conn.transaction():
            now = await review.approve(conn, request.user, send_id, data, state.settings)
        if now == "queued":
            await delivery.enqueue_send(db, state.redis, state.settings.delivery, send_id)
        async with db.acquire() as conn:
            return await messages.get_send(conn, request.user, send_id)

    @post(
        "/{send_id:int}/reject",
        guards=[require(Scope.REVIEWS_WRITE)],
        responses=error_responses(403, 404, 409, 413, 422),
        status_code=HTTP_200_OK,
        opt=STOPS,
        summary="Reject a send waiting in review, with a note: cancelled, its quota released",
    )
    async def reject(
        self, request: AuthedRequest, state: State, send_id: SendId, data: JSONBody[Rejection]
    ) -> SendView:
        db: Database = state.db
        async with db.acquire() as conn, conn.transaction():
            heirs = await review.reject(conn, request.user, send_id, data)
        for heir in heirs:
            await delivery.enqueue_send(db, state.redis, state.settings.delivery, heir)
        async with db.acquire() as conn:
            return await messages.get_send(conn, request.user, send_id)
