"""The console's roster (名册): /dashboard/contacts, the signed-in tenant's own contacts.

Listed a page at a time (keyset), searched by name or phone fragment (matched literally) and by
tag, each contact's opt-out shown; a contact edited (name, tags, free fields) or deleted; a
roster imported in two steps (the upload parsed and checked, its rows and bad lines shown,
nothing written; then 确认导入 imports the same file, held server-side meanwhile for at most
half an hour: hub.contacts.service.hold_upload); the roster exported as CSV or XLSX; and a
phone that opted out taken back, only with a reason.

Every page calls the service functions the API's routes call (hub.contacts.service) with the
same scopes: contacts:read to see, contacts:write to change. Each change writes its entry in the
operation log there. Forms check Origin (same_origin) and are validated with msgspec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State, UploadFile
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.middleware import DefineMiddleware
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Redirect, Template

from hub.contacts import exports, service
from hub.contacts.controllers import MAX_ROSTER_BYTES, PRINTABLE, ContactId
from hub.contacts.rosters import RosterError, RosterTooLarge, Row
from hub.contacts.schemas import ContactUpdate
from hub.dashboard import service as dashboard
from hub.dashboard.controllers import (
    PREFIX,
    PUBLIC,
    Form,
    SessionMiddleware,
    Viewer,
    _page,
    _viewer,
    same_origin,
)
from hub.db import Database
from hub.errors import ApiError, Invalid, NotFound, TooLarge, TooManyRequests
from tenants import service as tenants
from tenants.controllers import Conn
from tenants.repository import TenantRow
from tenants.scopes import Scope
from tenants.service import Principal, refuse_if_suspended

PAGE_SIZE = 50
# A preview shows this many of the rows it would import, and this many bad lines.
PREVIEW_ROWS = 200
PREVIEW_PROBLEMS = 500
Search = Annotated[str, QueryParameter(max_length=50, pattern=PRINTABLE)]
_TAG_SPLIT = re.compile(r"[,，;；、|\n]+")


class EditForm(msgspec.Struct, frozen=True):
    name: str = ""
    tags: str = ""  # separated by 、，; or | (as the import reads them)
    fields: str = ""  # one `名称=值` a line


class ReasonForm(msgspec.Struct, frozen=True):
    reason: str = ""


class ConfirmForm(msgspec.Struct, frozen=True):
    token: str = ""


@dataclass
class UploadForm:
    file: UploadFile


Upload = Body(media_type=RequestEncodingType.MULTI_PART)


def _update(form: EditForm) -> ContactUpdate:
    """The form as the API's PATCH body, checked by its Struct (Invalid, 422, if it would
    refuse it)."""
    fields: dict[str, str] = {}
    for number, line in enumerate(form.fields.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise Invalid(f"字段第 {number} 行应写作 名称=值")
        fields[key.strip()] = value.strip()
    tags = [t.strip() for t in _TAG_SPLIT.split(form.tags) if t.strip()]
    body = {"name": form.name.strip(), "tags": tags, "fields": fields}
    try:
        return msgspec.convert(body, ContactUpdate)
    except msgspec.ValidationError as exc:
        raise Invalid(f"输入无效：{exc}") from None


def _fields_text(fields: dict[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in fields.items())


def _may_change(who: Principal, doing: str) -> None:
    """The API's guard for a change: contacts:write, and no suspension above (403)."""
    dashboard.require(who, Scope.CONTACTS_WRITE, doing)
    refuse_if_suspended(who)


def _may_write(who: Principal) -> bool:
    return dashboard.may(who, Scope.CONTACTS_WRITE) and who.suspended_by is None


async def _own(conn: asyncpg.Connection, who: Principal) -> TenantRow:
    return await tenants.own(conn, who)


class RosterPages(Controller):
    path = f"{PREFIX}/contacts"
    include_in_schema = False
    middleware = [DefineMiddleware(SessionMiddleware, exclude_from_auth_key=PUBLIC)]  # noqa: RUF012
    dependencies = {"who": Provide(_viewer)}  # noqa: RUF012

    @get("/")
    async def contacts(
        self,
        conn: Conn,
        who: Viewer,
        q: Search = "",
        tag: Search = "",
        after: Annotated[int, QueryParameter(ge=0, le=2**53)] = 0,
        done: Annotated[str, QueryParameter(max_length=20)] = "",
    ) -> Template:
        dashboard.require(who, Scope.CONTACTS_READ, "查看名册")
        tenant = await _own(conn, who)
        page = await service.list_contacts(
            conn, tenant, after, PAGE_SIZE, tag.strip() or None, q.strip() or None
        )
        return _page(
            "contacts.html",
            who,
            tenant=tenant,
            page=page,
            q=q,
            tag=tag,
            done=done if done in ("deleted", "resubscribed") else "",
            may_write=_may_write(who),
            may_send=Scope.MESSAGES_WRITE in who.scopes,
        )

    @get("/{contact_id:int}")
    async def contact(
        self,
        conn: Conn,
        who: Viewer,
        contact_id: ContactId,
        saved: Annotated[str, QueryParameter(max_length=1)] = "",
    ) -> Template:
        dashboard.require(who, Scope.CONTACTS_READ, "查看名册")
        tenant = await _own(conn, who)
        found = await service.get_contact(conn, tenant, contact_id)
        return _contact_page(who, found, saved=saved == "1")

    @post("/{contact_id:int}", status_code=303)
    async def edit(
        self,
        request: Request[Principal, Any, State],
        conn: Conn,
        who: Viewer,
        contact_id: ContactId,
        data: Annotated[EditForm, Form],
    ) -> Response[Any]:
        same_origin(request)
        _may_change(who, "修改名册")
        tenant = await _own(conn, who)
        try:
            async with conn.transaction():
                await service.update_contact(conn, who, tenant, contact_id, _update(data))
        except ApiError as exc:
            if isinstance(exc, NotFound):
                raise
            found = await service.get_contact(conn, tenant, contact_id)
            return _contact_page(who, found, exc.status_code, error=exc.detail, form=data)
        return Redirect(f"{PREFIX}/contacts/{contact_id}?saved=1", status_code=303)

    @post("/{contact_id:int}/delete", status_code=303)
    async def delete(
        self,
        request: Request[Principal, Any, State],
        conn: Conn,
        who: Viewer,
        contact_id: ContactId,
    ) -> Redirect:
        same_origin(request)
        _may_change(who, "删除联系人")
        tenant = await _own(conn, who)
        await service.delete_contact(conn, who, tenant, contact_id)
        return Redirect(f"{PREFIX}/contacts?done=deleted", status_code=303)

    @post("/opt-outs/{phone:str}/resubscribe", status_code=303)
    async def resubscribe(
        self,
        request: Request[Principal, Any, State],
        conn: Conn,
        who: Viewer,
        phone: FromPath[str],
        data: Annotated[ReasonForm, Form],
        back: Annotated[int, QueryParameter(ge=0, le=2**53)] = 0,
    ) -> Response[Any]:
        same_origin(request)
        _may_change(who, "恢复接收短信")
        tenant = await _own(conn, who)
        try:
            async with conn.transaction():
                await service.resubscribe(conn, who, tenant.code, phone[:30], data.reason)
        except Invalid as exc:
            if back:
                found = await service.get_contact(conn, tenant, back)
                return _contact_page(who, found, 422, error=f"必须填写恢复原因：{exc.detail}")
            raise Invalid(f"必须填写恢复原因（{exc.detail}）") from None
        target = f"{PREFIX}/contacts/{back}?saved=1" if back else f"{PREFIX}/contacts"
        return Redirect(target, status_code=303)

    @get("/import")
    async def import_form(self, who: Viewer) -> Template:
        _may_change(who, "导入名册")
        return _page("contacts_import.html", who, preview=None, result=None, error=None)

    @post("/import", request_max_body_size=MAX_ROSTER_BYTES + 65_536)
    async def preview(
        self,
        request: Request[Principal, Any, State],
        state: State,
        who: Viewer,
        data: Annotated[UploadForm, Upload],
    ) -> Template:
        """The upload parsed and checked, nothing imported; the file held for its confirm."""
        same_origin(request)
        _may_change(who, "导入名册")
        content = await data.file.read()
        if len(content) > MAX_ROSTER_BYTES:
            raise TooLarge(f"文件超过 {MAX_ROSTER_BYTES // 1_048_576} MB")
        try:
            rows = await _parse(content, state)
        except (Invalid, TooLarge) as exc:
            status, error = exc.status_code, exc.detail
            return _page(
                "contacts_import.html", who, status, preview=None, result=None, error=error
            )
        filename = "".join(c for c in data.file.filename if c.isprintable())[:200]
        db: Database = state.db
        try:
            async with db.acquire() as conn, conn.transaction():
                tenant = await _own(conn, who)
                erasures = state.settings.people
                checked = await service.without_erased(conn, service.check_roster(rows), erasures)
                token = await service.hold_upload(conn, who, tenant, filename, content)
        except TooManyRequests as exc:  # the unit's other uploads wait: the form stays
            return _page(
                "contacts_import.html", who, 429, preview=None, result=None, error=exc.detail
            )
        await service.reclaim_uploads(db)  # the upload it replaced, if any
        valid = sorted(checked.valid.values(), key=lambda pair: pair[0])
        preview = {
            "filename": filename,
            "rows": checked.rows,
            "valid": len(valid),
            "shown": [(line, columns) for line, columns in valid[:PREVIEW_ROWS]],
            "problems": checked.problems[:PREVIEW_PROBLEMS],
            "more_problems": max(0, len(checked.problems) - PREVIEW_PROBLEMS),
            "token": token,
        }
        return _page("contacts_import.html", who, preview=preview, result=None, error=None)

    @post("/import/confirm", status_code=200)
    async def confirm(
        self,
        request: Request[Principal, Any, State],
        state: State,
        who: Viewer,
        data: Annotated[ConfirmForm, Form],
    ) -> Template:
        same_origin(request)
        _may_change(who, "导入名册")
        db: Database = state.db
        token = data.token[:100]
        async with db.acquire() as conn:
            tenant = await _own(conn, who)
            content = await service.peek_upload(conn, tenant, token)
        rows = await _parse(content, state)  # read once already: it was readable then
        async with db.acquire() as conn, conn.transaction():
            await service.take_upload(conn, tenant, token)  # once: a second confirm is 404
            result = await service.import_roster(conn, who, tenant, rows, state.settings.people)
        await service.reclaim_uploads(db)
        return _page("contacts_import.html", who, preview=None, result=result, error=None)

    # No request transaction (`conn`): the export reads on a connection of its own.
    @get("/export.csv")
    async def export_csv(self, state: State, who: Viewer) -> Response[Any]:
        dashboard.require(who, Scope.CONTACTS_READ, "下载名册")
        return await exports.contacts_export(state.db, who, "csv")

    @get("/export.xlsx")
    async def export_xlsx(self, state: State, who: Viewer) -> Response[Any]:
        dashboard.require(who, Scope.CONTACTS_READ, "下载名册")
        return await exports.contacts_export(state.db, who, "xlsx")


def _contact_page(
    who: Principal,
    found: Any,
    status: int = 200,
    *,
    error: str | None = None,
    form: EditForm | None = None,
    saved: bool = False,
) -> Template:
    shown = form or EditForm(
        name=found.name, tags="、".join(found.tags), fields=_fields_text(found.fields)
    )
    return _page(
        "contact.html",
        who,
        status,
        contact=found,
        form=shown,
        error=error,
        saved=saved,
        may_write=_may_write(who),
    )


async def _parse(content: bytes, state: State) -> list[Row]:
    try:
        return await service.read(content, state.settings.contacts)
    except RosterTooLarge as exc:
        raise TooLarge(f"名册过大：{exc}") from exc
    except RosterError as exc:
        raise Invalid(f"名册无法读取：{exc}") from exc
