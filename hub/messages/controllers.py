"""Message routes: send, read a send, page through its recipients."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Controller, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from hub import wire
from hub.db import Database
from hub.dedup import service as dedup
from hub.dedup.repository import StoredAnswer
from hub.delivery import service as delivery
from hub.errors import error_responses
from hub.messages import followup, service
from hub.messages.schemas import (
    DatedBy,
    FollowKind,
    FollowUpRequest,
    MessagePage,
    QuietHoursSetting,
    QuietHoursView,
    ReplyPage,
    SendAccepted,
    SendFilters,
    SendPage,
    SendPreview,
    SendRequest,
    SendView,
)
from hub.oplog import service as oplog
from tenants import service as tenants
from tenants.auth import STOPS, require
from tenants.controllers import AuthedRequest, Code, Conn
from tenants.repository import TenantRow
from tenants.scopes import Data, Scope

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+(?!\n)$",
        description="Retries with the same key and body get the first answer again (24 h)",
        required=False,
    ),
]
# The largest legal send: 1,000,000 phones in `to` as people write them, up to 36 bytes of JSON
# each (`"+86 139-1234-5678",` is 20; eleven full-width digits, 3 bytes each in UTF-8, are 36),
# 100,000 contact ids of up to 17 bytes, and the rest (body, tags, template variables) in well
# under 1 MiB: 36 + 1.7 + 1 MB, rounded up. A million plain 11-digit numbers are ~14 MB.
MAX_SEND_BYTES = 40 * 1024 * 1024
SendId = Annotated[int, PathParameter(ge=1, le=2**53, description="The send's id")]
Status = Literal[
    "accepted",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "deduplicated",
    "rejected",
    "opted_out",
    "cancelled",
    "expired",
]
SendStateFilter = Literal["scheduled", "held", "queued", "cancelled", "done", "review"]


class MessageController(Controller):
    path = "/v1/messages"
    tags = ["messages"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post(
        "/",
        guards=[require(Scope.MESSAGES_WRITE)],
        responses=error_responses(404, 409, 413, 422, 429),
        status_code=HTTP_202_ACCEPTED,
        request_max_body_size=MAX_SEND_BYTES,
        summary="Send one text to many phones; bad numbers are rejected one by one",
    )
    async def send(
        self,
        request: AuthedRequest,
        state: State,
        data: JSONBody[SendRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SendAccepted]:
        service.authorize(request.user, data)
        # Its own transaction rather than the request's: the batches are enqueued only once the
        # messages are committed, and before the 202 says they are on their way.
        db: Database = state.db
        async with db.acquire() as conn, conn.transaction():
            answer = await self._send(request, conn, state, data, idempotency_key)
        if isinstance(answer, SendAccepted) and answer.state == "queued":
            await delivery.enqueue_send(db, state.redis, state.settings.delivery, answer.id)
        return (
            answer
            if isinstance(answer, Response)
            else wire.HubResponse(answer, status_code=HTTP_202_ACCEPTED)
        )

    @post(
        "/preview",
        guards=[require(Scope.MESSAGES_WRITE)],
        responses=error_responses(404, 409, 413, 422),
        status_code=200,
        request_max_body_size=MAX_SEND_BYTES,
        summary="What POST /v1/messages would answer for this body now, sending nothing",
        description="The same body as POST /v1/messages and the same checks (urgent needs "
        "messages:urgent); answers its counts, rejects, segments and list price, plus the signed "
        "text, the cost at the hub's current prices and the quota left. Writes nothing.",
    )
    async def preview(
        self, request: AuthedRequest, conn: Conn, state: State, data: JSONBody[SendRequest]
    ) -> SendPreview:
        service.authorize(request.user, data)
        tenant = await tenants.own(conn, request.user)
        return await service.preview_send(conn, tenant, data, state.settings)

    async def _send(
        self,
        request: AuthedRequest,
        conn: asyncpg.Connection,
        state: State,
        data: SendRequest,
        idempotency_key: str | None,
    ) -> SendAccepted | Response[Any]:
        """The stored answer to a repeated Idempotency-Key, or the new send."""
        who = request.user
        body_hash = dedup.request_hash(await request.body())
        if idempotency_key is not None:
            stored = await dedup.replay(conn, who.tenant_id, idempotency_key, body_hash)
            if stored is not None:
                # The bytes of the first answer, written by the same encoder (hub.wire).
                replayed: Any = msgspec.Raw(stored.response)
                return wire.HubResponse(
                    replayed,
                    status_code=stored.status_code,
                    headers={"Idempotent-Replayed": "true"},
                )
        tenant = await tenants.own(conn, who)
        accepted = await service.create_send(conn, tenant, who.actor, data, state.settings)
        await oplog.record(conn, who, "send.create", **service.send_logged(tenant, accepted))
        if idempotency_key is not None:
            await dedup.remember(
                conn,
                who.tenant_id,
                idempotency_key,
                body_hash,
                HTTP_202_ACCEPTED,
                wire.encode(accepted),
                state.settings.dedup.idempotency_ttl_seconds,
            )
        return accepted

    @get(
        "/",
        guards=[require(Data.MESSAGES)],
        responses=error_responses(422),
        summary="The caller's sends (subtree=true: its descendants' too), newest first, filtered",
    )
    async def list_sends(
        self,
        request: AuthedRequest,
        conn: Conn,
        subtree: Annotated[bool, QueryParameter(description="include descendants")] = False,
        date_from: Annotated[
            date | None,
            QueryParameter(name="from", description="first day (Asia/Shanghai), YYYY-MM-DD"),
        ] = None,
        date_to: Annotated[
            date | None,
            QueryParameter(name="to", description="last day (Asia/Shanghai), inclusive"),
        ] = None,
        dated: Annotated[
            DatedBy, QueryParameter(description="the days are of its creation or due time")
        ] = "created",
        send_state: Annotated[SendStateFilter | None, QueryParameter(name="state")] = None,
        has_status: Annotated[
            list[Status] | None,
            QueryParameter(description="sends with a message in any of these statuses"),
        ] = None,
        text: Annotated[
            str | None,
            QueryParameter(
                min_length=1,
                max_length=100,
                pattern=r"^[^\x00-\x1f\x7f-\x9f]+$",
                description="the body contains this text (matched literally)",
            ),
        ] = None,
        sender: Annotated[
            str | None,
            QueryParameter(
                max_length=80,
                pattern=r"^[a-z]+:[A-Za-z0-9_.-]{1,64}$",
                description="created by: key:<prefix>, campaign:<id>, …",
            ),
        ] = None,
        reply_wanted: Annotated[bool | None, QueryParameter()] = None,
        before: Annotated[int | None, QueryParameter(ge=1, le=2**53)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> SendPage:
        filters = SendFilters(
            subtree=subtree,
            date_from=date_from,
            date_to=date_to,
            dated=dated,
            state=send_state,
            has_status=list(has_status or []),
            text=text,
            sender=sender,
            reply_wanted=reply_wanted,
            before=before,
            limit=limit,
        )
        return await followup.list_sends(conn, request.user, filters)

    @get(
        "/{send_id:int}",
        guards=[require(Data.MESSAGES)],
        responses=error_responses(404, 422),
        summary="A send of the caller's subtree with its messages counted by status",
    )
    async def get_send(self, request: AuthedRequest, conn: Conn, send_id: SendId) -> SendView:
        return await service.get_send(conn, request.user, send_id)

    @delete(
        "/{send_id:int}",
        guards=[require(Scope.MESSAGES_WRITE)],
        responses=error_responses(404, 409, 422),
        status_code=HTTP_204_NO_CONTENT,
        opt=STOPS,
        summary="Cancel a scheduled, held or in-review send; its quota is released",
    )
    async def cancel(self, request: AuthedRequest, state: State, send_id: SendId) -> None:
        # Its own transaction, as a send's: the heirs' batches are enqueued once it commits.
        db: Database = state.db
        async with db.acquire() as conn, conn.transaction():
            heirs = await service.cancel_send(conn, request.user, send_id)
        for heir in heirs:  # a scheduled or held heir is enqueued when it is released
            await delivery.enqueue_send(db, state.redis, state.settings.delivery, heir)

    @get(
        "/{send_id:int}/recipients",
        guards=[require(Data.MESSAGES)],
        responses=error_responses(404, 422),
        summary="A send's messages, one per recipient, in id order",
    )
    async def recipients(
        self,
        request: AuthedRequest,
        conn: Conn,
        send_id: SendId,
        after: Annotated[int, QueryParameter(ge=0, le=2**53)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        status: Annotated[Status | None, QueryParameter()] = None,
        replied: Annotated[
            bool | None,
            QueryParameter(
                description="only phones that replied (true) or did not (false) to the send or "
                "its reminders and resends; needs the replies scope"
            ),
        ] = None,
    ) -> MessagePage:
        return await service.list_messages(
            conn, request.user, send_id, after, limit, status, replied
        )

    @get(
        "/{send_id:int}/replies",
        guards=[require(Data.REPLIES)],
        responses=error_responses(404, 422),
        summary="Replies linked to a send, its reminders and resends, in the order they came",
    )
    async def replies(
        self,
        request: AuthedRequest,
        conn: Conn,
        send_id: SendId,
        after: Annotated[int, QueryParameter(ge=0, le=2**53)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> ReplyPage:
        return await followup.replies(conn, request.user, send_id, after, limit)

    @post(
        "/{send_id:int}/remind",
        guards=[require(Scope.MESSAGES_WRITE)],
        responses=error_responses(404, 409, 413, 422, 429),
        status_code=HTTP_202_ACCEPTED,
        summary="A new send, linked to the first, to the recipients who have not replied",
    )
    async def remind(
        self,
        request: AuthedRequest,
        state: State,
        send_id: SendId,
        data: JSONBody[FollowUpRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SendAccepted]:
        return await _follow_up(request, state, send_id, "remind", data, idempotency_key)

    @post(
        "/{send_id:int}/resend",
        guards=[require(Scope.MESSAGES_WRITE)],
        responses=error_responses(404, 409, 413, 422, 429),
        status_code=HTTP_202_ACCEPTED,
        summary="A new send, linked to the first, to the recipients whose message failed",
    )
    async def resend(
        self,
        request: AuthedRequest,
        state: State,
        send_id: SendId,
        data: JSONBody[FollowUpRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[SendAccepted]:
        return await _follow_up(request, state, send_id, "resend", data, idempotency_key)


async def _follow_up(
    request: AuthedRequest,
    state: State,
    send_id: int,
    kind: FollowKind,
    data: FollowUpRequest,
    idempotency_key: str | None,
) -> Response[SendAccepted]:
    """A reminder or resend, in a transaction of its own as a send's (its batches are enqueued
    once it commits), under the Idempotency-Key; the key's request is the path and the body."""
    who = request.user
    db: Database = state.db
    body_hash = dedup.request_hash(request.url.path.encode() + b"\n" + await request.body())
    async with db.acquire() as conn, conn.transaction():
        answer = await followup.once(
            conn,
            who,
            idempotency_key,
            body_hash,
            state.settings,
            lambda: followup.follow_up(conn, who, send_id, kind, data, state.settings),
        )
    if isinstance(answer, StoredAnswer):
        replayed: Any = msgspec.Raw(answer.response)
        return wire.HubResponse(
            replayed, status_code=answer.status_code, headers={"Idempotent-Replayed": "true"}
        )
    if answer.state == "queued":
        await delivery.enqueue_send(db, state.redis, state.settings.delivery, answer.id)
    return wire.HubResponse(answer, status_code=HTTP_202_ACCEPTED)


class QuietHoursController(Controller):
    path = "/v1/tenants/{code:str}/quiet-hours"
    tags = ["messages"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/",
        guards=[require(Scope.TENANTS_READ)],
        responses=error_responses(404),
        summary="The quiet hours that hold a tenant's normal and bulk sends",
    )
    async def get_quiet_hours(
        self, request: AuthedRequest, conn: Conn, state: State, code: Code
    ) -> QuietHoursView:
        tenant = await tenants.get_visible(conn, request.user, code)
        return await _quiet_view(conn, tenant, state)

    @put(
        "/",
        guards=[require(Scope.TENANTS_WRITE)],
        responses=error_responses(404, 413, 422),
        summary="Set a tenant's own quiet hours (the tenant itself or a tenant above it)",
    )
    async def set_quiet_hours(
        self,
        request: AuthedRequest,
        conn: Conn,
        state: State,
        code: Code,
        data: JSONBody[QuietHoursSetting],
    ) -> QuietHoursView:
        tenant = await tenants.get_visible(conn, request.user, code)
        before = await _quiet_view(conn, tenant, state)
        await service.set_quiet_hours(conn, tenant, data)
        after = await _quiet_view(conn, tenant, state)
        await oplog.record(
            conn, request.user, "quiet_hours.set", tenant_id=tenant.id, before=before, after=after
        )
        return after


async def _quiet_view(conn: Conn, tenant: TenantRow, state: State) -> QuietHoursView:
    quiet, source = await service.quiet_hours_for(conn, tenant, state.settings)
    return QuietHoursView(
        tenant=tenant.code,
        enabled=quiet.enabled,
        starts=quiet.starts.strftime("%H:%M"),
        ends=quiet.ends.strftime("%H:%M"),
        source=source,
    )
