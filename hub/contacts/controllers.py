"""Roster routes: import a CSV/XLSX roster, list, edit, delete and export contacts, and take an
opted-out phone back (resubscribe) with a recorded reason."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter, RawBody
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from hub.contacts import exports, service
from hub.contacts.exports import XLSX
from hub.contacts.rosters import RosterError, RosterTooLarge, Row
from hub.contacts.schemas import (
    Contact,
    ContactPage,
    ContactUpdate,
    ImportResult,
    ResubscribeIn,
    Resubscription,
)
from hub.db import Database
from hub.errors import Invalid, TooLarge, error_responses
from tenants import service as tenants
from tenants.auth import require
from tenants.controllers import AuthedRequest, Conn
from tenants.schemas import LINE_CONTROL_CHARS
from tenants.scopes import Scope

# A roster of a whole county (tens of thousands of rows) fits comfortably. For an XLSX this is
# the compressed size; what it may unzip to is HUB_CONTACTS__MAX_UNZIPPED_BYTES.
MAX_ROSTER_BYTES = 20 * 1024 * 1024
# No control characters (PostgreSQL text cannot even hold NUL).
PRINTABLE = rf"^[^{LINE_CONTROL_CHARS}]*(?!\n)$"
ContactId = Annotated[int, PathParameter(ge=1, le=2**53)]


class ContactController(Controller):
    path = "/v1/contacts"
    tags = ["contacts"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post(
        "/import",
        guards=[require(Scope.CONTACTS_WRITE)],
        responses=error_responses(413, 422),
        status_code=HTTP_200_OK,
        request_max_body_size=MAX_ROSTER_BYTES,
        opt={"raw_body": True},  # a file, whatever its Content-Type says (hub.inputs)
        summary="Import a roster (CSV in UTF-8, UTF-8 with BOM or GBK; or XLSX) as the body",
        description="Columns by header: 姓名/name, 手机/phone, 标签/tags (separated by 、，; or |),"
        " 入党日期/joined_on, and any others as free fields. Valid rows are upserted by phone;"
        " each bad row is reported with its line number. 413 past the caps on rows, cell length"
        " or an XLSX's unzipped size; 422 for a file that cannot be read.",
    )
    async def import_roster(
        self, request: AuthedRequest, state: State, body: RawBody
    ) -> ImportResult:
        rows = await _parse(body, state)
        # The transaction opens once the file is read: a parse of seconds holds no connection.
        db: Database = state.db
        async with db.acquire() as conn, conn.transaction():
            tenant = await tenants.own(conn, request.user)
            return await service.import_roster(
                conn, request.user, tenant, rows, state.settings.people
            )

    @get(
        "/",
        guards=[require(Scope.CONTACTS_READ)],
        responses=error_responses(422),
        summary="The caller's roster, filtered by tag or by a name/phone fragment",
    )
    async def list_contacts(
        self,
        request: AuthedRequest,
        conn: Conn,
        tag: Annotated[str | None, QueryParameter(max_length=50, pattern=PRINTABLE)] = None,
        q: Annotated[str | None, QueryParameter(max_length=50, pattern=PRINTABLE)] = None,
        after: Annotated[int, QueryParameter(ge=0, le=2**53)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> ContactPage:
        tenant = await tenants.own(conn, request.user)
        return await service.list_contacts(conn, tenant, after, limit, tag, q)

    @delete(
        "/{contact_id:int}",
        guards=[require(Scope.CONTACTS_WRITE)],
        responses=error_responses(404, 422),
        status_code=HTTP_204_NO_CONTENT,
        summary="Remove a contact from the caller's roster",
    )
    async def delete_contact(
        self, request: AuthedRequest, conn: Conn, contact_id: ContactId
    ) -> None:
        tenant = await tenants.own(conn, request.user)
        await service.delete_contact(conn, request.user, tenant, contact_id)

    @patch(
        "/{contact_id:int}",
        guards=[require(Scope.CONTACTS_WRITE)],
        responses=error_responses(404, 422),
        summary="Change a contact's name, tags or free fields (given ones replace, whole)",
    )
    async def update_contact(
        self,
        request: AuthedRequest,
        conn: Conn,
        contact_id: ContactId,
        data: JSONBody[ContactUpdate],
    ) -> Contact:
        tenant = await tenants.own(conn, request.user)
        return await service.update_contact(conn, request.user, tenant, contact_id, data)

    # No request transaction (`conn`): the export reads on a connection of its own.
    @get(
        "/export.csv",
        guards=[require(Scope.CONTACTS_READ)],
        responses=error_responses(422),
        media_type="text/csv",
        summary="The caller's roster as CSV (the import's columns, then free fields)",
    )
    async def export_csv(self, request: AuthedRequest, state: State) -> Response[Any]:
        return await exports.contacts_export(state.db, request.user, "csv")

    @get(
        "/export.xlsx",
        guards=[require(Scope.CONTACTS_READ)],
        responses=error_responses(422),
        media_type=XLSX,
        summary="The caller's roster as XLSX (the import's columns, then free fields)",
    )
    async def export_xlsx(self, request: AuthedRequest, state: State) -> Response[Any]:
        return await exports.contacts_export(state.db, request.user, "xlsx")


class OptOutController(Controller):
    path = "/v1/tenants/{code:str}/opt-outs"
    tags = ["contacts"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post(
        "/{phone:str}/resubscribe",
        guards=[require(Scope.CONTACTS_WRITE)],
        responses=error_responses(404, 422),
        status_code=HTTP_200_OK,
        summary="Take back a phone that opted out (T/退订…), with the reason why",
        description="Only with a reason (one line, at most 200 characters); the reason and who"
        " did it are recorded, and the operation log has an entry. 404 when the phone has not"
        " opted out of this tenant (or the tenant is not in the caller's subtree).",
    )
    async def resubscribe(
        self,
        request: AuthedRequest,
        conn: Conn,
        code: FromPath[str],
        phone: Annotated[str, PathParameter(max_length=30)],
        data: JSONBody[ResubscribeIn],
    ) -> Resubscription:
        return await service.resubscribe(conn, request.user, code, phone, data.reason)


async def _parse(body: bytes, state: State) -> list[Row]:
    try:
        return await service.read(body, state.settings.contacts)
    except RosterTooLarge as exc:
        raise TooLarge(str(exc)) from exc
    except RosterError as exc:
        raise Invalid(
            str(exc), fields=[{"key": "body", "message": str(exc), "source": "body"}]
        ) from exc
