"""The dashboard's follow-up pages: sends found again, a send's results, its replies, and the
two buttons that act on it.

- `/dashboard/sends`: the signed-in tenant's sends (and its subtree's), filtered as
  `GET /v1/messages` filters them (hub.messages.followup.list_sends);
- `/dashboard/sends/{id}`: counts, recipients with status and reason in Chinese
  (hub.messages.reasons), the replies linked to the send's family, who has and has not replied
  when it asked for a reply, and the forms 提醒未回复的人 / 重发失败的;
- `/dashboard/sends/{id}/results.xlsx`: hub.messages.results.

The pages read with the API's scopes (`tenants.scopes.grants`: a send's body and phones and its
replies need messages:read); the forms need messages:write and no suspension, as the API's
routes do, and post to the same service (`followup.follow_up` under `followup.once`), never a
second path for sending. Each form carries its own Idempotency-Key (a random token rendered
into it), so a double click, or the browser sending the form again, makes one send.
"""

from __future__ import annotations

import secrets
from datetime import date
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect, Stream, Template

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
from hub.dedup import service as dedup
from hub.dedup.repository import StoredAnswer
from hub.delivery import service as delivery
from hub.errors import Invalid
from hub.exports.files import building, download
from hub.messages import followup, results
from hub.messages import service as messages
from hub.messages.schemas import DatedBy, FollowKind, FollowUpRequest, SendAccepted, SendFilters
from hub.settings import Settings
from tenants.controllers import Conn
from tenants.scopes import Data, Scope
from tenants.service import Principal, refuse_if_suspended

PAGE_SIZE = 50
STATES = ("scheduled", "held", "queued", "cancelled", "done", "review")
# What the list can look for among messages' statuses (the page's choice of "having …").
HAVING = {"failed": ("failed", "undelivered", "expired"), "deduplicated": ("deduplicated",)}
Text = Annotated[str, QueryParameter(max_length=100)]


class FollowUpForm(msgspec.Struct, frozen=True):
    token: str = ""
    body: str = ""


def _day(text: str, field: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise Invalid(
            f"日期必须是 YYYY-MM-DD 格式，而不是 {text!r}",
            fields=[{"key": field, "message": "YYYY-MM-DD", "source": "query"}],
        ) from None


def _filters(query: dict[str, str], before: int | None) -> SendFilters:
    """The page's query, checked as the API's (Invalid, 422, for what it would refuse)."""
    state = query["state"] or None
    if state is not None and state not in STATES:
        raise Invalid(f"未知的状态 {state!r}")
    having = query["having"]
    if having and having not in HAVING:
        raise Invalid(f"未知的筛选 {having!r}")
    dated: DatedBy = "due" if query["dated"] == "due" else "created"
    text = query["text"].strip() or None
    if text is not None and not text.isprintable():
        raise Invalid("搜索内容不能含控制字符")
    filters = SendFilters(
        subtree=query["subtree"] == "1",
        date_from=_day(query["from"], "from"),
        date_to=_day(query["to"], "to"),
        dated=dated,
        state=state,  # type: ignore[arg-type]  # checked against STATES above
        has_status=list(HAVING.get(having, ())),
        text=text,
        sender=query["sender"].strip() or None,
        before=before,
        limit=PAGE_SIZE,
    )
    # The API's own bounds on text and sender (its Struct's Meta), by the same rules.
    return msgspec.convert(msgspec.to_builtins(filters), SendFilters, strict=False)


class SendsController(Controller):
    path = f"{PREFIX}/sends"
    include_in_schema = False
    # Litestar reads these as class attributes.
    middleware = [DefineMiddleware(SessionMiddleware, exclude_from_auth_key=PUBLIC)]  # noqa: RUF012
    dependencies = {"who": Provide(_viewer)}  # noqa: RUF012

    @get("/")
    async def list_sends(
        self,
        conn: Conn,
        who: Viewer,
        text: Text = "",
        sender: Text = "",
        send_state: Annotated[str, QueryParameter(name="state", max_length=20)] = "",
        having: Annotated[str, QueryParameter(max_length=20)] = "",
        dated: Annotated[str, QueryParameter(max_length=10)] = "created",
        subtree: Annotated[str, QueryParameter(max_length=1)] = "",
        date_from: Annotated[str, QueryParameter(name="from", max_length=10)] = "",
        date_to: Annotated[str, QueryParameter(name="to", max_length=10)] = "",
        before: Annotated[int | None, QueryParameter(ge=1, le=2**53)] = None,
    ) -> Template:
        dashboard.require(who, Data.MESSAGES, "查看发送记录")
        query = {
            "text": text,
            "sender": sender,
            "state": send_state,
            "having": having,
            "dated": dated,
            "subtree": subtree,
            "from": date_from,
            "to": date_to,
        }
        page = await followup.list_sends(conn, who, _filters(query, before))
        return _page("sends.html", who, page=page, query=query, states=STATES)

    @get("/{send_id:int}")
    async def send_page(
        self,
        conn: Conn,
        who: Viewer,
        send_id: FromPath[int],
        after: Annotated[int, QueryParameter(ge=0, le=2**53)] = 0,
        made: Annotated[str, QueryParameter(max_length=10)] = "",
    ) -> Template:
        dashboard.require(who, Data.MESSAGES, "查看发送内容和收件人")
        send = await messages.get_send(conn, who, send_id)
        page = await messages.list_messages(conn, who, send_id, after, 100, None)
        replies = None
        waiting = None
        if dashboard.may(who, Data.REPLIES):
            replies = await followup.replies(conn, who, send_id, 0, 200)
            if send.reply_wanted:
                waiting = await messages.list_messages(conn, who, send_id, 0, 200, None, False)
        may_act = dashboard.may(who, Scope.MESSAGES_WRITE) and who.suspended_by is None
        return _page(
            "send.html",
            who,
            send=send,
            page=page,
            replies=replies,
            waiting=waiting,
            may_act=may_act,
            # One token per form as rendered: the form's Idempotency-Key.
            tokens={"remind": secrets.token_urlsafe(18), "resend": secrets.token_urlsafe(18)},
            remind_body=followup.REMIND_PREFIX + send.body,
            made=made if made in ("remind", "resend") else "",
        )

    @post("/{send_id:int}/remind", status_code=303)
    async def remind(
        self,
        request: Request[Principal, Any, State],
        state: State,
        who: Viewer,
        send_id: FromPath[int],
        data: Annotated[FollowUpForm, Form],
    ) -> Response[Any]:
        return await _follow_up(request, state, who, send_id, "remind", data)

    @post("/{send_id:int}/resend", status_code=303)
    async def resend(
        self,
        request: Request[Principal, Any, State],
        state: State,
        who: Viewer,
        send_id: FromPath[int],
        data: Annotated[FollowUpForm, Form],
    ) -> Response[Any]:
        return await _follow_up(request, state, who, send_id, "resend", data)

    # No request transaction (`conn`): the file is written on a connection of its own.
    @get("/{send_id:int}/results.xlsx")
    async def results_file(self, state: State, who: Viewer, send_id: FromPath[int]) -> Stream:
        dashboard.require(who, Data.MESSAGES, "下载发送结果")
        async with building(who.tenant_id) as slot:
            path, name = await results.results_xlsx(state.db, who, send_id)
            return download(path, name, results.MEDIA, slot)


async def _follow_up(
    request: Request[Principal, Any, State],
    state: State,
    who: Principal,
    send_id: int,
    kind: FollowKind,
    data: FollowUpForm,
) -> Redirect:
    """A form's reminder or resend: the API's service under the form's own Idempotency-Key;
    to the new send's page (the same one again for a repeated form)."""
    same_origin(request)
    dashboard.require(who, Scope.MESSAGES_WRITE, "发送短信")
    refuse_if_suspended(who)
    if not (16 <= len(data.token) <= 64 and data.token.isascii() and data.token.isprintable()):
        raise Invalid("表单已失效，请刷新页面后重试")
    body = data.body.strip() or None
    if kind == "resend":
        body = None
    try:
        follow = FollowUpRequest(body=body)
        follow = msgspec.convert(msgspec.to_builtins(follow), FollowUpRequest)
    except msgspec.ValidationError as exc:
        raise Invalid(f"提醒内容无效：{exc}") from None
    settings: Settings = state.settings
    db: Database = state.db
    request_hash = dedup.request_hash(f"{request.url.path}\n{body or ''}".encode())
    async with db.acquire() as conn, conn.transaction():
        answer = await followup.once(
            conn,
            who,
            f"dashboard:{data.token}",
            request_hash,
            settings,
            lambda: followup.follow_up(conn, who, send_id, kind, follow, settings),
        )
    if isinstance(answer, StoredAnswer):
        new_id = msgspec.json.decode(answer.response, type=SendAccepted).id
    else:
        new_id = answer.id
        if answer.state == "queued":
            await delivery.enqueue_send(db, state.redis, settings.delivery, answer.id)
    return Redirect(f"{PREFIX}/sends/{new_id}?made={kind}", status_code=303)
