"""Template routes: write, list, read, and review (by a tenant above the author)."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from hub.errors import error_responses
from hub.templates import service
from hub.templates.schemas import CreateTemplate, Review, Template, TemplateList
from tenants import service as tenants
from tenants.auth import require, require_review
from tenants.controllers import AuthedRequest, Conn
from tenants.scopes import TEMPLATES_REVIEWED_BEFORE, Scope

TemplateId = Annotated[int, PathParameter(ge=1, le=2**53)]


class TemplateController(Controller):
    path = "/v1/templates"
    tags = ["templates"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post(
        "/",
        guards=[require(Scope.MESSAGES_WRITE)],
        responses=error_responses(409, 413, 422),
        status_code=HTTP_201_CREATED,
        summary="Write a template with {variables}; it waits for a tenant above to approve it",
    )
    async def create(
        self, request: AuthedRequest, conn: Conn, data: JSONBody[CreateTemplate]
    ) -> Template:
        tenant = await tenants.own(conn, request.user)
        return await service.create(conn, request.user, tenant, data)

    @get(
        "/",
        guards=[require(Scope.MESSAGES_READ)],
        responses=error_responses(422),
        summary="The caller's templates, or (subtree=true) its whole subtree's, e.g. to review",
    )
    async def list_templates(
        self,
        request: AuthedRequest,
        conn: Conn,
        subtree: Annotated[bool, QueryParameter()] = False,
        status: Annotated[
            Literal["pending", "approved", "rejected"] | None, QueryParameter()
        ] = None,
    ) -> TemplateList:
        tenant = await tenants.own(conn, request.user)
        return TemplateList(items=await service.list_templates(conn, tenant, subtree, status))

    @get(
        "/pending",
        guards=[require(Scope.MESSAGES_READ)],
        responses=error_responses(),
        summary="Templates awaiting the caller's review (its subtree's, not its own)",
    )
    async def pending(self, request: AuthedRequest, conn: Conn) -> TemplateList:
        return TemplateList(items=await service.pending_for(conn, request.user))

    @get(
        "/{template_id:int}",
        guards=[require(Scope.MESSAGES_READ)],
        responses=error_responses(404, 422),
        summary="A template of the caller's subtree",
    )
    async def get_template(
        self, request: AuthedRequest, conn: Conn, template_id: TemplateId
    ) -> Template:
        return await service.get(conn, request.user, template_id)

    @post(
        "/{template_id:int}/review",
        guards=[require_review(TEMPLATES_REVIEWED_BEFORE)],
        responses=error_responses(404, 409, 413, 422),
        status_code=HTTP_200_OK,
        summary="Approve or reject a pending template of a tenant below the caller "
        "(reviews:write; messages:write still does for API keys, for now)",
    )
    async def review(
        self, request: AuthedRequest, conn: Conn, template_id: TemplateId, data: JSONBody[Review]
    ) -> Template:
        return await service.review(conn, request.user, template_id, data)
