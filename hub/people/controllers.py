"""The hub operator's routes for a person's data: `POST /v1/people/lookup` (what the hub holds
of a phone, across every tenant) and `POST /v1/people/erase`. The phone travels in the body,
never in a URL. A principal of the root tenant with tenants:write; any other tenant's is 403."""

from __future__ import annotations

from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from hub.db import Database
from hub.errors import error_responses
from hub.people import service
from hub.people.schemas import Erased, EraseRequest, PersonData, PersonQuery
from tenants.auth import require
from tenants.controllers import AuthedRequest, Conn
from tenants.scopes import Scope


class PeopleController(Controller):
    path = "/v1/people"
    tags = ["people"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post(
        "/lookup",
        guards=[require(Scope.TENANTS_WRITE)],
        responses=error_responses(413, 422, 503),
        status_code=HTTP_200_OK,
        summary="What the hub sent to a phone, across every tenant (the hub operator only)",
        description="The messages to the phone (a page, oldest first: pass `next_after` as"
        " `after`), the rosters holding it, its opt-outs and replies. Logged under the phone's"
        " HMAC (`person.lookup`). 422 for a phone that is not one; 503 without"
        " HUB_PEOPLE__SECRET.",
    )
    async def lookup(
        self, request: AuthedRequest, conn: Conn, state: State, data: JSONBody[PersonQuery]
    ) -> PersonData:
        return await service.lookup(conn, request.user, data, state.settings.people)

    @post(
        "/erase",
        guards=[require(Scope.TENANTS_WRITE)],
        responses=error_responses(413, 422, 503),
        status_code=HTTP_200_OK,
        summary="Erase a phone from every roster, message and record (the hub operator only)",
        description="Removes the phone from rosters, messages (phone and own text), replies,"
        " opt-outs, refused recipients, the outbox, pending receipts, webhook pushes, content"
        " keys and stored answers, and redacts the operation log's entries that hold it; keeps"
        " its HMAC so that no tenant messages it again. Answers the rows erased per table.",
    )
    async def erase(
        self, request: AuthedRequest, state: State, data: JSONBody[EraseRequest]
    ) -> Erased:
        db: Database = state.db
        return await service.erase(db, request.user, data, state.settings.people)
