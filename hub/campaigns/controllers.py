"""Campaign routes: start, list and stop anniversary greetings."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from hub.campaigns import service
from hub.campaigns.schemas import Campaign, CampaignList, CreateCampaign
from hub.errors import error_responses
from tenants import service as tenants
from tenants.auth import STOPS, require
from tenants.controllers import AuthedRequest, Conn
from tenants.scopes import Scope

CampaignId = Annotated[int, PathParameter(ge=1, le=2**53)]


class CampaignController(Controller):
    path = "/v1/campaigns"
    tags = ["campaigns"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post(
        "/",
        guards=[require(Scope.MESSAGES_WRITE)],
        responses=error_responses(404, 409, 413, 422),
        status_code=HTTP_201_CREATED,
        summary="Greet each roster contact on the anniversary of joined_on, every day at a time",
    )
    async def create(
        self, request: AuthedRequest, conn: Conn, data: JSONBody[CreateCampaign]
    ) -> Campaign:
        who = request.user
        tenant = await tenants.own(conn, who)
        return await service.create(conn, who, tenant, data)

    @get(
        "/",
        guards=[require(Scope.MESSAGES_READ)],
        responses=error_responses(),
        summary="The caller's campaigns",
    )
    async def list_campaigns(self, request: AuthedRequest, conn: Conn) -> CampaignList:
        tenant = await tenants.own(conn, request.user)
        return CampaignList(items=await service.list_campaigns(conn, tenant))

    @delete(
        "/{campaign_id:int}",
        guards=[require(Scope.MESSAGES_WRITE)],
        responses=error_responses(404, 422),
        status_code=HTTP_204_NO_CONTENT,
        opt=STOPS,
        summary="Stop a campaign",
    )
    async def stop(self, request: AuthedRequest, conn: Conn, campaign_id: CampaignId) -> None:
        tenant = await tenants.own(conn, request.user)
        await service.stop(conn, request.user, tenant, campaign_id)
