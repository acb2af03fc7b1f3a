"""The compose page: `/dashboard/compose`, a send written in the console.

Recipients from pasted numbers, roster tags (each with how many phones it reaches, in the
tenant's own roster and in its whole subtree) and contacts picked on the roster page (`?contacts=`
ids, sent as the API's `to_contacts`); a body or an approved template, where {姓名} and the
roster's other columns are filled in per recipient (hub.messages.personal); priority (urgent only
for a key or person holding messages:urgent), a time, and "ask for a reply".

- `POST /dashboard/compose/preview` answers what the send would be: the API's preview
  (hub.messages.service.preview_send, as `POST /v1/messages/preview`), as the whole page (the
  预览 button, without JavaScript) or, asked with the header `X-Fragment: 1` by compose.js, as
  the preview region alone.
- `POST /dashboard/compose/roster` reads a roster file (CSV/XLSX, the contacts import's parser)
  and adds its phones to the pasted numbers, showing each unusable row with its line first; its
  names and other columns ride along (a hidden field, the API's `values`) for {姓名} and the like.
- `POST /dashboard/compose/send` sends through the API's service (`create_send` under
  `followup.once`, the Idempotency-Key layer): the form's hidden random token is its key, so a
  double click, or the browser posting the form again, makes one send. Then to the send's page.

The form is turned into the API's `SendRequest` and checked by its rules (msgspec); scopes are
the API's (messages:write to preview or send, as the routes' guards).
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State, UploadFile
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.params import QueryParameter
from litestar.response import Redirect, Template

from hub.calendar import BUSINESS_TZ
from hub.contacts import service as contacts
from hub.contacts.controllers import MAX_ROSTER_BYTES
from hub.contacts.rosters import RosterError, RosterTooLarge, Row
from hub.dashboard import service as dashboard
from hub.dashboard.controllers import (
    PREFIX,
    PUBLIC,
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
from hub.errors import ApiError, Invalid, TooLarge
from hub.messages import followup
from hub.messages import service as messages
from hub.messages.numbers import Rejected, normalize
from hub.messages.reasons import reject_word
from hub.messages.schemas import SendAccepted, SendPreview, SendRequest
from hub.oplog import service as oplog
from hub.settings import Settings
from hub.templates import service as templates
from tenants import service as tenants
from tenants.controllers import Conn
from tenants.scopes import Scope
from tenants.service import Principal, ancestry_paths, refuse_if_suspended

# Pasted numbers: one a line, or separated by commas, semicolons or 、 (a number may hold spaces).
_SEPARATORS = re.compile(r"[\n,，;；、]")
# Template variables, one a line: 名称=值.
_VARIABLE = re.compile(r"^\s*([^=\s][^=]*?)\s*[=\uff1d]\s*(.*?)\s*$")
FIELDS = (
    "token",
    "to",
    "contacts",
    "subtree",
    "template",
    "body",
    "vars",
    "priority",
    "send_at",
    "reply",
    "people",
)
MAX_FIELD = 1_000_000
# A roster file's values carried in the form at most (larger: import the roster first).
MAX_PEOPLE = 500_000
# Contacts picked on the roster page at most (a send's tags reach more).
MAX_PICKED = 1_000


class Composed(msgspec.Struct, frozen=True):
    """The form as posted (every field text; `tags` the ticked ones), shown again as it was."""

    token: str = ""
    to: str = ""
    contacts: str = ""  # picked contact ids, comma-separated
    tags: list[str] = []
    subtree: str = ""
    template: str = ""
    body: str = ""
    vars: str = ""
    priority: str = "normal"
    send_at: str = ""
    reply: str = ""
    people: str = ""  # a roster file's values by phone, JSON (the API's `values`)


async def _composed(request: Request[Principal, Any, State]) -> Composed:
    form = await request.form()
    values: dict[str, Any] = {k: str(form.get(k) or "") for k in FIELDS}
    values["tags"] = [str(t) for t in form.getall("tags")] if "tags" in form else []
    texts = [*values.values(), *values["tags"]]
    if any(isinstance(v, str) and "\x00" in v for v in texts):
        raise Invalid("表单内容不能含 NUL 字符")
    if sum(len(v) for v in texts if isinstance(v, str)) > MAX_FIELD:
        raise Invalid("表单内容过长")
    return Composed(**values)


def _numbers(text: str) -> list[str]:
    return [n.strip() for n in _SEPARATORS.split(text) if n.strip()]


def _variables(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _VARIABLE.match(line)
        if match is None:
            raise Invalid(f"模板变量第 {n} 行应为 名称=值")
        found[match[1]] = match[2]
    return found


def _contact_ids(text: str) -> list[int]:
    ids = [p.strip() for p in text.split(",") if p.strip()]
    if len(ids) > MAX_PICKED or not all(i.isascii() and i.isdigit() and len(i) <= 19 for i in ids):
        raise Invalid(f"所选联系人无效（最多 {MAX_PICKED} 人）")
    return list(dict.fromkeys(int(i) for i in ids))


def _people(text: str) -> dict[str, dict[str, str]]:
    """The form's carried roster values (hidden field `people`)."""
    if not text:
        return {}
    try:
        return msgspec.json.decode(text, type=dict[str, dict[str, str]])
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise Invalid("表单已失效，请重新导入名册") from None


def _send_at(text: str) -> str | None:
    """A datetime-local field (Beijing time) as the API's RFC 3339."""
    if not text.strip():
        return None
    try:
        local = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Invalid(f"发送时间格式无效：{text!r}") from None
    if local.tzinfo is None:
        local = local.replace(tzinfo=BUSINESS_TZ)
    return local.isoformat()


def send_request(form: Composed) -> SendRequest:
    """The form as the API's body, checked by the API's own rules."""
    template = form.template.strip()
    if template and not template.isdigit():
        raise Invalid("模板编号无效")
    raw: dict[str, Any] = {
        "to": _numbers(form.to),
        "to_contacts": _contact_ids(form.contacts),
        "to_tags": form.tags,
        "subtree": form.subtree == "1",
        "priority": form.priority or "normal",
        "reply_wanted": form.reply == "1",
    }
    if form.people:
        raw["values"] = _people(form.people)
    if template:
        raw["template"] = int(template)
        raw["vars"] = _variables(form.vars)
    else:
        raw["body"] = form.body
    if (send_at := _send_at(form.send_at)) is not None:
        raw["send_at"] = send_at
    try:
        return msgspec.convert(raw, SendRequest, strict=False)
    except msgspec.ValidationError as exc:
        raise Invalid(f"表单内容无效：{exc}") from None


def _lines(form: Composed) -> dict[str, int]:
    """Each pasted number's line (first occurrence), to show a refused one where it was."""
    lines: dict[str, int] = {}
    for n, line in enumerate(form.to.splitlines(), 1):
        for number in _numbers(line):
            lines.setdefault(number, n)
    return lines


async def _form_context(conn: Conn, who: Principal, form: Composed) -> dict[str, Any]:
    tenant = await tenants.own(conn, who)
    try:
        picked = await contacts.picked(conn, tenant, _contact_ids(form.contacts))
    except Invalid:
        picked = []  # the preview says why
    own = dict(await contacts.tag_counts(conn, tenant, subtree=False))
    below = dict(await contacts.tag_counts(conn, tenant, subtree=True))
    tags = [(tag, own.get(tag, 0), n) for tag, n in below.items()]
    return {
        "tags": tags,
        "templates": await templates.usable(conn, ancestry_paths(tenant.path)),
        "may_urgent": Scope.MESSAGES_URGENT in who.scopes,
        "picked": picked,
    }


def _roster_phones(
    rows: list[Row],
) -> tuple[list[str], list[tuple[int, str]], dict[str, dict[str, str]]]:
    """The phones of a roster's rows, each row that has none usable (with its line), and each
    phone's values for a body's placeholders: its name (as 姓名 and name) and other columns."""
    phones: list[str] = []
    problems: list[tuple[int, str]] = []
    values: dict[str, dict[str, str]] = {}
    for row in rows:
        if row.problem:
            problems.append((row.line, row.problem_words or row.problem))
            continue
        recipient = normalize(row.phone)
        if isinstance(recipient, Rejected):
            problems.append((row.line, f"{row.phone or '（空）'}：{reject_word(recipient.reason)}"))
        else:
            phones.append(row.phone)
            values[row.phone] = {
                k: v for k, v in (row.fields | contacts.named(row.name)).items() if v
            }
    return phones, problems, values


async def _previewed(
    conn: Conn, who: Principal, form: Composed, settings: Settings
) -> dict[str, Any]:
    """The preview region's context: the API's preview of the form, or why there is none."""
    preview: SendPreview | None = None
    problem: str | None = None
    try:
        data = send_request(form)
        messages.authorize(who, data)
        tenant = await tenants.own(conn, who)
        preview = await messages.preview_send(conn, tenant, data, settings)
    except ApiError as exc:
        problem = str(exc.detail)
    return {"preview": preview, "problem": problem, "lines": _lines(form)}


async def _whole(conn: Conn, who: Principal, form: Composed, context: dict[str, Any]) -> Template:
    if not form.token:
        form = msgspec.structs.replace(form, token=secrets.token_urlsafe(18))
    context.setdefault("roster_problems", [])
    context.setdefault("roster_phones", None)
    context.setdefault("roster_values", True)
    return _page("compose.html", who, form=form, **context, **await _form_context(conn, who, form))


def _allowed(who: Principal) -> None:
    dashboard.require(who, Scope.MESSAGES_WRITE, "发送短信")


class ComposeController(Controller):
    path = f"{PREFIX}/compose"
    include_in_schema = False
    # Litestar reads these as class attributes.
    middleware = [DefineMiddleware(SessionMiddleware, exclude_from_auth_key=PUBLIC)]  # noqa: RUF012
    dependencies = {"who": Provide(_viewer)}  # noqa: RUF012

    @get("/")
    async def compose(
        self,
        conn: Conn,
        who: Viewer,
        contacts: Annotated[list[int] | None, QueryParameter(max_items=MAX_PICKED)] = None,
    ) -> Template:
        """The empty form, or with the contacts picked on the roster page."""
        _allowed(who)
        picked = ",".join(str(i) for i in dict.fromkeys(contacts or []))
        form = Composed(token=secrets.token_urlsafe(18), contacts=picked)
        return await _whole(conn, who, form, {"preview": None, "problem": None, "lines": {}})

    @post("/preview", status_code=200)
    async def preview(
        self, request: Request[Principal, Any, State], conn: Conn, state: State, who: Viewer
    ) -> Template:
        same_origin(request)
        _allowed(who)
        form = await _composed(request)
        context = await _previewed(conn, who, form, state.settings)
        if request.headers.get("x-fragment") == "1":
            return _page("compose_preview.html", who, **context)
        return await _whole(conn, who, form, context)

    @post("/roster", status_code=200, request_max_body_size=MAX_ROSTER_BYTES)
    async def roster(
        self, request: Request[Principal, Any, State], conn: Conn, state: State, who: Viewer
    ) -> Template:
        """A roster file's phones added to the pasted numbers, each unusable row shown with its
        line before anything is sent; then the page and its preview as 预览 shows them."""
        same_origin(request)
        _allowed(who)
        form = await _composed(request)
        upload = (await request.form()).get("roster")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise Invalid("请选择名册文件（CSV 或 XLSX）")
        try:
            rows = await contacts.read(await upload.read(), state.settings.contacts)
        except RosterTooLarge as exc:
            raise TooLarge(f"名册过大：{exc}") from exc
        except RosterError as exc:
            raise Invalid(f"名册无法读取：{exc}") from exc
        phones, problems, values = _roster_phones(rows)
        values = _people(form.people) | values
        people = msgspec.json.encode(values).decode()
        carried = len(people) <= MAX_PEOPLE
        form = msgspec.structs.replace(
            form,
            to="\n".join(filter(None, [form.to.strip(), *phones])),
            people=people if carried else "",
        )
        context = await _previewed(conn, who, form, state.settings)
        context.update(roster_problems=problems, roster_phones=len(phones), roster_values=carried)
        return await _whole(conn, who, form, context)

    @post("/send", status_code=303)
    async def send(
        self, request: Request[Principal, Any, State], state: State, who: Viewer
    ) -> Response[Any]:
        same_origin(request)
        _allowed(who)
        refuse_if_suspended(who)
        form = await _composed(request)
        if not (16 <= len(form.token) <= 64 and form.token.isascii() and form.token.isprintable()):
            raise Invalid("表单已失效，请刷新页面后重试")
        data = send_request(form)
        messages.authorize(who, data)
        settings: Settings = state.settings
        db: Database = state.db
        # The key's request is the API's body: the same form posted again is the same request.
        request_hash = dedup.request_hash(msgspec.json.encode(data))

        async def create() -> SendAccepted:
            tenant = await tenants.own(conn, who)
            accepted = await messages.create_send(conn, tenant, who.actor, data, settings)
            logged = messages.send_logged(tenant, accepted)
            await oplog.record(conn, who, "send.create", **logged)
            return accepted

        async with db.acquire() as conn, conn.transaction():
            answer = await followup.once(
                conn, who, f"dashboard:{form.token}", request_hash, settings, create
            )
        if isinstance(answer, StoredAnswer):
            sent = msgspec.json.decode(answer.response, type=SendAccepted).id
        else:
            sent = answer.id
            if answer.state == "queued":
                await delivery.enqueue_send(db, state.redis, settings.delivery, answer.id)
        return Redirect(f"{PREFIX}/sends/{sent}", status_code=303)
