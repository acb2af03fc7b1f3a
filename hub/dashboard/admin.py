"""The console's administration (issue 14, point 6): units below (create, suspend, resume),
API keys (create with scopes never beyond the creator's, the secret shown once, revoke), the
tenant's webhook (set, delete; its secret never shown again). Users and quota have their own
pages (/dashboard/users, the tenant page's quota form).

Each form calls what the API's route calls — tenants.admin (units, keys: the same rules and
the same operation-log entries) and hub.delivery.webhooks — validates with the API's Structs,
and asks the API's scopes: tenants:write for units, keys:write for keys. The webhook (where the
tenant's replies go) is 管理's too, tenants:write: the API's messages:write is a system's key,
and people do not use the API. A tenant outside the signed-in subtree is 404."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import asyncpg
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.params import FromPath, QueryParameter
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
from hub.dashboard.schemas import KeyForm, StatusForm, UnitForm, WebhookForm
from hub.delivery import webhooks
from hub.delivery.schemas import WebhookSetting
from hub.errors import ApiError, Invalid
from hub.oplog.service import Log
from hub.signatures.service import Desk
from tenants import admin
from tenants import service as tenants
from tenants.controllers import Conn
from tenants.schemas import CreateChild, CreateKey, NewApiKey, UpdateTenant
from tenants.scopes import Scope
from tenants.service import Principal

ADMIN = f"{PREFIX}/admin"


class AdminPages(Controller):
    path = ADMIN
    include_in_schema = False
    middleware = [DefineMiddleware(SessionMiddleware, exclude_from_auth_key=PUBLIC)]  # noqa: RUF012
    dependencies = {"who": Provide(_viewer)}  # noqa: RUF012

    # --- units ---------------------------------------------------------------------------

    @get("/units")
    async def units(self, conn: Conn, who: Viewer, tenant: CodeQuery = "") -> Template:
        service.require(who, Scope.TENANTS_WRITE, "管理下级单位")
        return await _units_page(conn, who, tenant or who.tenant_code)

    @post("/units", status_code=303)
    async def create_unit(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        state: State,
        who: Viewer,
        data: Annotated[UnitForm, Form],
    ) -> Response[Any]:
        same_origin(request)
        service.require(who, Scope.TENANTS_WRITE, "创建下级单位")
        parent = data.parent or who.tenant_code
        await tenants.get_visible(conn, who, parent)  # 404 before anything else
        fields = {"code": data.code, "name": data.name, "signature": data.signature or None}
        try:
            tenants.refuse_if_suspended(who)
            form = form_as(CreateChild, fields)
            most = state.settings.tenants.max_units_per_division
            async with conn.transaction():
                await admin.create_unit(conn, who, parent, form, most, Desk(), Log())
        except ApiError as exc:
            if not shown_on_page(exc):
                raise
            return await _units_page(
                conn, who, parent, exc.status_code, error=exc.detail, form=data
            )
        return Redirect(f"{ADMIN}/units?tenant={parent}", status_code=303)

    @post("/units/{code:str}/status", status_code=303)
    async def set_status(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        who: Viewer,
        code: FromPath[str],
        data: Annotated[StatusForm, Form],
    ) -> Response[Any]:
        same_origin(request)
        service.require(who, Scope.TENANTS_WRITE, "暂停或恢复下级单位")
        unit = await tenants.get_visible(conn, who, code)
        # The page it was changed from: the unit's parent's (its own, for the caller's tenant).
        own = unit.code == who.tenant_code or unit.parent_code is None
        parent = unit.code if own else str(unit.parent_code)
        try:
            tenants.refuse_if_suspended(who)
            change = form_as(UpdateTenant, {"status": data.status})
            if change.status is None:
                raise Invalid("请选择暂停或恢复")
            async with conn.transaction():
                await admin.update(conn, who, code, change, Desk(), Log())
        except ApiError as exc:
            if not shown_on_page(exc):
                raise
            return await _units_page(conn, who, parent, exc.status_code, error=exc.detail)
        return Redirect(f"{ADMIN}/units?tenant={parent}", status_code=303)

    # --- keys ----------------------------------------------------------------------------

    @get("/keys")
    async def keys(self, conn: Conn, who: Viewer, tenant: CodeQuery = "") -> Template:
        service.require(who, Scope.KEYS_WRITE, "管理 API 密钥")
        return await _keys_page(conn, who, tenant or who.tenant_code)

    @post("/keys")
    async def create_key(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        who: Viewer,
        data: Annotated[KeyForm, Form],
    ) -> Template:
        same_origin(request)
        service.require(who, Scope.KEYS_WRITE, "创建 API 密钥")
        code = data.tenant or who.tenant_code
        await tenants.get_visible(conn, who, code)
        scopes = [data.scope] if isinstance(data.scope, str) else data.scope
        try:
            tenants.refuse_if_suspended(who)
            if not [s for s in scopes if s]:
                raise Invalid("请至少选择一个权限")
            form = form_as(CreateKey, {"scopes": [s for s in scopes if s], "name": data.name})
            async with conn.transaction():
                made = await admin.create_key(conn, who, code, form, Log())
        except ApiError as exc:
            if not shown_on_page(exc):
                raise
            return await _keys_page(conn, who, code, exc.status_code, error=exc.detail)
        # The secret is in this answer only: never stored, never shown again.
        return await _keys_page(conn, who, code, 201, created=made)

    @post("/keys/{prefix:str}/revoke", status_code=303)
    async def revoke_key(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        who: Viewer,
        prefix: FromPath[str],
        tenant: CodeQuery = "",
    ) -> Redirect:
        same_origin(request)
        service.require(who, Scope.KEYS_WRITE, "吊销 API 密钥")
        # Revoking stops something: a suspended subtree may still (as the API's STOPS).
        await admin.revoke_key(conn, who, prefix, Log())
        return Redirect(f"{ADMIN}/keys?tenant={tenant or who.tenant_code}", status_code=303)

    # --- webhook -------------------------------------------------------------------------

    @get("/webhook")
    async def webhook(self, conn: Conn, who: Viewer, tenant: CodeQuery = "") -> Template:
        service.require(who, Scope.TENANTS_WRITE, "设置回调地址")
        return await _webhook_page(conn, who, tenant or who.tenant_code)

    @post("/webhook", status_code=303)
    async def set_webhook(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        state: State,
        who: Viewer,
        data: Annotated[WebhookForm, Form],
        action: Annotated[Literal["set", "delete"], QueryParameter()] = "set",
    ) -> Response[Any]:
        same_origin(request)
        service.require(who, Scope.TENANTS_WRITE, "设置回调地址")
        code = data.tenant or who.tenant_code
        await tenants.get_visible(conn, who, code)
        try:
            async with conn.transaction():
                if action == "delete":  # stops something: allowed while suspended
                    await webhooks.delete_webhook(conn, who, code)
                else:
                    tenants.refuse_if_suspended(who)
                    setting = form_as(WebhookSetting, {"url": data.url, "secret": data.secret})
                    private_ok = state.settings.delivery.webhooks_private_ok
                    await webhooks.set_webhook(conn, who, code, setting, private_ok)
        except ApiError as exc:
            if not shown_on_page(exc):
                raise
            return await _webhook_page(
                conn, who, code, exc.status_code, error=exc.detail, url=data.url
            )
        return Redirect(f"{ADMIN}/webhook?tenant={code}", status_code=303)


async def _units_page(
    conn: asyncpg.Connection,
    who: Principal,
    code: str,
    status: int = 200,
    *,
    error: str | None = None,
    form: UnitForm | None = None,
) -> Template:
    parent = await tenants.get_visible(conn, who, code)
    children = await tenants.list_children(conn, parent, "", 1000)
    return _page(
        "admin_units.html", who, status, parent=parent, children=children, error=error, form=form
    )


async def _keys_page(
    conn: asyncpg.Connection,
    who: Principal,
    code: str,
    status: int = 200,
    *,
    error: str | None = None,
    created: NewApiKey | None = None,
) -> Template:
    tenant = await tenants.get_visible(conn, who, code)
    listed = await tenants.list_keys(conn, tenant)
    grantable = sorted(s.value for s in who.scopes)
    return _page(
        "admin_keys.html",
        who,
        status,
        tenant=tenant,
        keys=listed,
        grantable=grantable,
        error=error,
        created=created,
    )


async def _webhook_page(
    conn: asyncpg.Connection,
    who: Principal,
    code: str,
    status: int = 200,
    *,
    error: str | None = None,
    url: str = "",
) -> Template:
    tenant = await tenants.get_visible(conn, who, code)
    found = await webhooks.current(conn, who, code)
    return _page(
        "admin_webhook.html", who, status, tenant=tenant, webhook=found, error=error, url=url
    )
