"""Signature routes: a tenant's signature and its proposals, proposing, the reviewer's queue,
and the review itself (by a tenant above whoever proposed)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post, put
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_200_OK

from hub.errors import error_responses
from hub.signatures import service
from hub.signatures.schemas import Proposal, ProposalList, ProposeSignature, SignatureState
from hub.templates.schemas import Review
from tenants import service as tenants
from tenants.auth import require, require_review
from tenants.controllers import AuthedRequest, Code, Conn
from tenants.scopes import SIGNATURES_REVIEWED_BEFORE, Scope

ProposalId = Annotated[int, PathParameter(ge=1, le=2**53)]


class SignatureController(Controller):
    path = "/v1"
    tags = ["signatures"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/tenants/{code:str}/signature",
        guards=[require(Scope.TENANTS_READ)],
        responses=error_responses(404),
        summary="A tenant's approved signature, the proposal awaiting review, and earlier ones",
    )
    async def get_signature(self, request: AuthedRequest, conn: Conn, code: Code) -> SignatureState:
        return await service.state(conn, await tenants.get_visible(conn, request.user, code))

    @put(
        "/tenants/{code:str}/signature",
        guards=[require(Scope.TENANTS_WRITE)],
        responses=error_responses(404, 409, 413, 422),
        summary="Propose a signature for a tenant of the caller's subtree; a tenant above approves",
    )
    async def propose(
        self, request: AuthedRequest, conn: Conn, code: Code, data: JSONBody[ProposeSignature]
    ) -> SignatureState:
        tenant = await tenants.get_visible(conn, request.user, code)
        tenant = await service.propose(conn, request.user, tenant, data.signature)
        return await service.state(conn, tenant)

    @get(
        "/signatures/pending",
        guards=[require(Scope.TENANTS_READ)],
        responses=error_responses(),
        summary="Signature proposals awaiting the caller's review, oldest first",
    )
    async def pending(self, request: AuthedRequest, conn: Conn) -> ProposalList:
        return ProposalList(items=await service.pending_for(conn, request.user))

    @post(
        "/signatures/{proposal_id:int}/review",
        guards=[require_review(SIGNATURES_REVIEWED_BEFORE)],
        responses=error_responses(404, 409, 413, 422),
        status_code=HTTP_200_OK,
        summary="Approve or reject a signature proposal made below the caller "
        "(reviews:write; tenants:write still does for API keys, for now)",
    )
    async def review(
        self, request: AuthedRequest, conn: Conn, proposal_id: ProposalId, data: JSONBody[Review]
    ) -> Proposal:
        return await service.review(conn, request.user, proposal_id, data)
