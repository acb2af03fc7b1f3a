"""HTTP routes for the tenant tree, API keys and the caller's identity.

Every route resolves the path's tenant through `service.get_visible`, so a code outside the
caller's subtree (ancestor, sibling, unknown) is one and the same 404.
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from tenants import admin, service
from tenants.auth import STOPS, require
from tenants.errors import error_responses
from tenants.oplog import OperationLog
from tenants.schemas import (
    ApiKeyList,
    CreateChild,
    CreateKey,
    Me,
    NewApiKey,
    Tenant,
    TenantNode,
    TenantPage,
    UpdateTenant,
)
from tenants.scopes import Scope
from tenants.service import Principal
from tenants.signatures import SignatureDesk

AuthedRequest = Request[Principal, str, State]
# The request's transaction (provided by the app as `conn`).
Conn = NamedDependency[asyncpg.Connection]
# Where signatures given to a tenant go for review (provided by the app as `signature_desk`).
Desk = NamedDependency[SignatureDesk]
# Where changes are logged (provided by the app as `oplog`: hub.oplog's recorder).
Log = NamedDependency[OperationLog]
Code = FromPath[str]
PageLimit = Annotated[int, QueryParameter(ge=1, le=1000, description="Page size")]
After = Annotated[
    str, QueryParameter(max_length=12, description="Cursor: the `next_after` of the previous page")
]
Depth = Annotated[int, QueryParameter(ge=0, le=6, description="Levels below the tenant to include")]


class TenantController(Controller):
    path = "/v1"
    tags = ["tenants"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/me", responses=error_responses(), summary="The calling key's tenant and scopes")
    async def me(self, request: AuthedRequest, conn: Conn) -> Me:
        who = request.user
        tenant = await service.own(conn, who)
        return Me(
            tenant=service.to_tenant(tenant),
            key_prefix=who.key_prefix or "",
            scopes=sorted(who.scopes),
        )

    @get(
        "/tenants/{code:str}",
        guards=[require(Scope.TENANTS_READ)],
        responses=error_responses(404),
        summary="A tenant of the caller's subtree",
    )
    async def get_tenant(self, request: AuthedRequest, conn: Conn, code: Code) -> Tenant:
        return service.to_tenant(await service.get_visible(conn, request.user, code))

    @patch(
        "/tenants/{code:str}",
        guards=[require(Scope.TENANTS_WRITE)],
        responses=error_responses(404, 413, 422),
        summary="Rename a tenant, propose its SMS signature, or (as an ancestor) change its status",
        description=(
            "Only a tenant above may set `status`. Suspension covers the subtree: the "
            "suspended tenant and every tenant below it may still read, but every write "
            "(sending, campaigns, templates, contacts, keys, units, quota, settings) answers "
            "403 `suspended` naming the suspended tenant; revoking keys, cancelling a send, "
            "stopping a campaign and dropping a webhook stay allowed. Their scheduled, held "
            "and queued sends wait (none is lost, cancelled or expired meanwhile, and their "
            "quota stays reserved) and go out once the tenant is `active` again, within a "
            "minute, or when quiet hours end for normal and bulk sends."
        ),
    )
    async def update_tenant(
        self,
        request: AuthedRequest,
        conn: Conn,
        signature_desk: Desk,
        oplog: Log,
        code: Code,
        data: JSONBody[UpdateTenant],
    ) -> Tenant:
        tenant = await admin.update(conn, request.user, code, data, signature_desk, oplog)
        return service.to_tenant(tenant)

    @get(
        "/tenants/{code:str}/children",
        guards=[require(Scope.TENANTS_READ)],
        responses=error_responses(404, 422),
        summary="A page of a tenant's direct children, in code order",
    )
    async def children(
        self,
        request: AuthedRequest,
        conn: Conn,
        code: Code,
        after: After = "",
        limit: PageLimit = 100,
    ) -> TenantPage:
        parent = await service.get_visible(conn, request.user, code)
        return await service.list_children(conn, parent, after, limit)

    @get(
        "/tenants/{code:str}/tree",
        guards=[require(Scope.TENANTS_READ)],
        responses=error_responses(404, 422),
        summary="A tenant's subtree, nested, down to `depth` levels",
    )
    async def tree(
        self, request: AuthedRequest, conn: Conn, code: Code, depth: Depth = 2
    ) -> TenantNode:
        top = await service.get_visible(conn, request.user, code)
        return await service.subtree(conn, top, depth)

    @post(
        "/tenants/{code:str}/children",
        guards=[require(Scope.TENANTS_WRITE)],
        responses=error_responses(404, 409, 413, 422, 503),
        status_code=HTTP_201_CREATED,
        summary="Create a unit (township, institution…) under a tenant of the caller's subtree",
        description=(
            "A unit's code is its parent's code followed by three digits (under 510104: "
            "510104001 to 510104999), so it lies inside the parent's space and is never a "
            "GB/T 2260 code; anything else is 422. A code already taken is 409 (the answer "
            "names only the code asked for); a division (county, prefecture, province) holding "
            "`HUB_TENANTS__MAX_UNITS_PER_DIVISION` units already (2000 by default) is 409 "
            "`units_exhausted`. A refused creation uses no SMS extension; when every extension "
            "is in use the answer is 503 `extensions_exhausted`."
        ),
    )
    async def create_child(
        self,
        request: AuthedRequest,
        conn: Conn,
        signature_desk: Desk,
        oplog: Log,
        code: Code,
        data: JSONBody[CreateChild],
    ) -> Tenant:
        max_units = request.app.state.settings.tenants.max_units_per_division
        child = await admin.create_unit(
            conn, request.user, code, data, max_units, signature_desk, oplog
        )
        return service.to_tenant(child)

    @post(
        "/tenants/{code:str}/keys",
        guards=[require(Scope.KEYS_WRITE)],
        responses=error_responses(404, 413, 422),
        status_code=HTTP_201_CREATED,
        summary="Create an API key for a tenant of the caller's subtree; the secret is shown once",
    )
    async def create_key(
        self, request: AuthedRequest, conn: Conn, oplog: Log, code: Code, data: JSONBody[CreateKey]
    ) -> NewApiKey:
        return await admin.create_key(conn, request.user, code, data, oplog)

    @get(
        "/tenants/{code:str}/keys",
        guards=[require(Scope.KEYS_WRITE)],
        responses=error_responses(404),
        summary="A tenant's API keys (never their secrets)",
    )
    async def list_keys(self, request: AuthedRequest, conn: Conn, code: Code) -> ApiKeyList:
        tenant = await service.get_visible(conn, request.user, code)
        return ApiKeyList(items=await service.list_keys(conn, tenant))

    @delete(
        "/keys/{prefix:str}",
        guards=[require(Scope.KEYS_WRITE)],
        responses=error_responses(404),
        status_code=HTTP_204_NO_CONTENT,
        opt=STOPS,
        summary="Revoke a key of the caller's subtree; effective from the next request",
    )
    async def revoke_key(
        self, request: AuthedRequest, conn: Conn, oplog: Log, prefix: FromPath[str]
    ) -> None:
        await admin.revoke_key(conn, request.user, prefix, oplog)
