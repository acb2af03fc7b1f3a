"""The dashboard's pages under /dashboard: server-rendered HTML, server-side sessions.

Sign-in takes an API key with `dashboard:read` and answers an HttpOnly, SameSite=Strict cookie
holding a random session token; the session itself is a row in PostgreSQL (service.session), so
signing out ends it at once, and every request checks the key again, so revoking it does too.
Forms also check that Origin (or Referer) is this host. What a page shows beyond counts and
quota follows the API's scopes (tenants.scopes.READ_SCOPE). Errors on these paths render as
HTML pages; the JSON API is untouched.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

import asyncpg
import msgspec
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.middleware import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
    DefineMiddleware,
)
from litestar.params import Body, FromPath, FromQuery, Parameter, QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.router import Router
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ExceptionHandler, ExceptionHandlersMap

from hub import reads
from hub.billing import exports
from hub.calendar import current_period, parse_period, period_text, previous_period, shown
from hub.dashboard import service
from hub.dashboard.schemas import (
    ROLE_FIELDS,
    SORT_KEYS,
    CodeForm,
    InviteForm,
    LoginForm,
    PasswordForm,
    QuotaForm,
    RolesForm,
    SortKey,
    checked_roles,
)
from hub.db import Database
from hub.delivery import service as delivery
from hub.errors import ApiError, Forbidden, Invalid, NotFound, RateLimited, outage
from hub.limits import service as limits
from hub.messages.reasons import STATUS_WORDS, reason, reject_word
from hub.oplog import service as oplog
from hub.reads import ReadConn
from hub.settings import DashboardSettings, Settings
from hub.users import service as users
from hub.users.repository import UserRow
from hub.users.schemas import InviteIn, NewInvite, UpdateUser
from tenants import service as tenants
from tenants.auth import client_address
from tenants.controllers import Conn
from tenants.scopes import ROLE_SCOPES, Data, Scope, grants, scope_for
from tenants.service import Principal

log = logging.getLogger("hub.dashboard")

HERE = Path(__file__).resolve().parent
PREFIX = "/dashboard"
COOKIE = "hub_dashboard"
LOGIN = f"{PREFIX}/login"
CODE = f"{PREFIX}/code"
Form = Body(media_type=RequestEncodingType.URL_ENCODED)
# The signed-in principal (the `who` dependency).
Viewer = NamedDependency[Principal]
PeriodQuery = Annotated[str | None, QueryParameter(max_length=7, description="YYYY-MM")]

# --- configuration -----------------------------------------------------------------------


def warn_retired_secret(settings: Settings) -> None:
    """Said once as the server starts, if the configuration still sets the retired secret."""
    if settings.dashboard.secret:
        log.warning(
            "HUB_DASHBOARD__SECRET is no longer used and is ignored: dashboard sessions are kept "
            "in PostgreSQL and need no signing secret; remove it from the configuration"
        )


def yuan(micros: int) -> str:
    """Micro-yuan as yuan to the fen, rounded half away from zero: 1234567 → '¥1.23'."""
    sign = "-" if micros < 0 else ""
    fen = (abs(micros) + 5_000) // 10_000
    return f"{sign}¥{fen // 100:,}.{fen % 100:02d}"


def number(n: int) -> str:
    return f"{n:,}"


# What the pages call the ledger's entry kinds and the messages' statuses (the codes stay in
# the pages' data-* attributes and in the API).
WORDS = {
    "open": "开户",
    "limit": "设定限额",
    "allocate": "分配下级",
    "policy": "调整策略",
    "reserve": "预占",
    "post": "确认使用",
    "use": "使用",
    "void": "释放",
    "expire": "预占过期",
    # The messages' statuses: hub.messages.reasons, the words the results file uses too.
    **STATUS_WORDS,
}


def words(code: str) -> str:
    return WORDS.get(code, code)


def permille(value: int | None) -> str:
    return "—" if value is None else f"{value // 10}.{value % 10}%"


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined
    )
    # `|beijing`: every time on a page is read on Beijing's clock (hub.calendar.shown).
    env.filters.update(yuan=yuan, number=number, permille=permille, zh=words, beijing=shown)
    # A recipient's reason and a refused number's, in the words of hub.messages.reasons.
    env.filters.update(reason=lambda m: reason(m.status, m.error), reject=reject_word)
    env.globals["level_names"] = exports.LEVELS  # the statement's own words for the levels
    # What the signed-in key may see, asked of the same table as the API's guards.
    env.globals.update(
        Data=Data,
        Scope=Scope,
        may=lambda who, need: grants(who.scopes, need),
        may_review=service.may_review,
        holder=service.holder,
        scope_for=scope_for,
    )
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


def static_files() -> Router:
    return create_static_files_router(
        path=f"{PREFIX}/static", directories=[HERE / "static"], include_in_schema=False
    )


# --- errors as pages ---------------------------------------------------------------------

_TITLES = {
    400: "请求有误",
    401: "需要登录",
    403: "无权操作",
    404: "未找到",
    405: "不支持的操作",
    409: "无法完成",
    413: "内容过大",
    422: "输入无效",
    429: "请求过多",
    503: "暂时无法服务",
}


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, service.SecondFactorRequired):
        return Redirect(CODE)
    if isinstance(exc, service.SignInRequired):
        return Redirect(f"{LOGIN}?next={quote(request.url.path)}")
    if (down := outage(exc)) is not None:
        log.warning("dashboard %s %s: 503 %s: %r", request.method, request.url.path, down.code, exc)
        detail = (
            "数据库或队列暂时无法连接，请稍后再试"
            if down.code == "unavailable"
            else "系统繁忙，请稍后再试"
        )
        title = _TITLES[503]
        return _page("error.html", None, 503, down.headers, status=503, title=title, detail=detail)
    if isinstance(exc, ApiError | HTTPException):
        status, detail = exc.status_code, str(exc.detail)
    else:
        log.exception("dashboard error on %s %s", request.method, request.url.path, exc_info=exc)
        status, detail = 500, "服务器内部错误"
    title = _TITLES.get(status, "出错了")
    headers = exc.headers if isinstance(exc, RateLimited) else None  # Retry-After
    return _page("error.html", None, status, headers, status=status, title=title, detail=detail)


def html_errors(handlers: ExceptionHandlersMap) -> ExceptionHandlersMap:
    """The app's handlers, answering with an HTML page on the dashboard's paths instead."""

    def wrap(handler: ExceptionHandler[Any]) -> ExceptionHandler[Any]:
        def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
            if request.url.path == PREFIX or request.url.path.startswith(f"{PREFIX}/"):
                return _error_page(request, exc)
            return handler(request, exc)

        return handle

    return {kind: wrap(handler) for kind, handler in handlers.items()}


# --- requests ----------------------------------------------------------------------------


def _rules(state: State) -> DashboardSettings:
    settings: Settings = state.settings
    return settings.dashboard


class SessionMiddleware(AbstractAuthenticationMiddleware):
    """The dashboard's sign-in check, before any dependency or handler runs (a failure there
    would leave the request's transaction to the garbage collector): the session's row and its
    key, on a connection of its own, as ApiKeyMiddleware checks a key. `request.user` is the
    principal; a missing, ended or revoked session raises SignInRequired (to the sign-in page),
    and a session still owing its SMS code SecondFactorRequired (to the code page) on every
    route but those marked `OWING_CODE`. Routes marked `PUBLIC` (signing in and out, invites)
    are not checked."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, State]
    ) -> AuthenticationResult:
        state = connection.app.state
        db: Database = state.db
        async with db.acquire() as conn, conn.transaction():
            signed = await service.session(conn, connection.cookies.get(COOKIE), _rules(state))
        if signed.owes_code and not connection.route_handler.opt.get(OWING_CODE):
            raise service.SecondFactorRequired("请先输入短信验证码")
        who = msgspec.structs.replace(signed.who, address=client_address(connection))
        scope = connection.scope
        method, route = str(scope.get("method", "")), str(scope.get("path_template", ""))
        if (method, route) in limits.COSTS:  # a heavy write, charged before its body is read
            biggest = connection.route_handler.resolve_request_max_body_size()
            length = limits.body_length(connection.headers, biggest)
            await state.limiter.charge(db, state.redis, who, method, route, length)
        return AuthenticationResult(user=who, auth=signed)


# A route's opt key: no session needed (SessionMiddleware skips it).
PUBLIC = "dashboard_public"
# A route's opt key: open to a session that still owes its SMS code (the code page, sign-out).
OWING_CODE = "dashboard_owing_code"


T = TypeVar("T")
# A tenant's code in a page's query (`?tenant=510104`).
CodeQuery = Annotated[str, QueryParameter(max_length=12)]


def form_as(kind: type[T], fields: dict[str, Any]) -> T:
    """A form's fields as the API's Struct `kind`, or 422 saying what is wrong."""
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        raise Invalid(f"输入无效：{exc}") from None


def shown_on_page(exc: ApiError) -> bool:
    """Whether a form's failure is shown on its page (404 and sign-in stay their own pages)."""
    return not isinstance(exc, NotFound | service.SignInRequired)


async def _viewer(request: Request[Principal, None, State]) -> Principal:
    """The signed-in principal SessionMiddleware found."""
    return request.user


def same_origin(request: Request[Any, Any, Any]) -> None:
    """CSRF defence beside the SameSite=Strict cookie: a form must come from this host."""
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    if not source or urlsplit(source).netloc != request.headers.get("host", ""):
        raise Forbidden("跨站提交被拒绝：请从控制台页面提交表单")


def _month(text: str | None) -> date:
    if not text:
        return current_period()
    month = parse_period(text)
    if month is None:
        raise Invalid(f"月份必须是 YYYY-MM 格式，而不是 {text!r}")
    return month


# Every page: scripts and styles only from the hub itself (the quota bars' widths are inline
# style attributes), never framed, forms posted only here.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _page(
    name: str,
    who: Principal | None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Template:
    return Template(
        template_name=name,
        context={"who": who, **context},
        status_code=status_code,
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


class DashboardController(Controller):
    path = PREFIX
    include_in_schema = False
    # Litestar reads these as class attributes.
    middleware = [DefineMiddleware(SessionMiddleware, exclude_from_auth_key=PUBLIC)]  # noqa: RUF012
    dependencies = {"who": Provide(_viewer)}  # noqa: RUF012

    @get("/")
    async def home(self, who: Viewer) -> Redirect:
        return Redirect(f"{PREFIX}/t/{who.tenant_code}")

    @get("/login", opt={PUBLIC: True})
    async def login_form(self, state: State, next: FromQuery[str] = "") -> Template:
        return _login_page(state, 200, None, next)

    @post("/login", status_code=303, opt={PUBLIC: True})
    async def login(
        self,
        request: Request[Any, Any, State],
        state: State,
        data: Annotated[LoginForm, Form],
        next: FromQuery[str] = "",
    ) -> Response[Any]:
        """A person's login and password (then, for admins and approvers, the SMS code page),
        or the operator's key. Its own transaction: a failure it counted is committed, and the
        code's send is enqueued once committed."""
        same_origin(request)
        db: Database = state.db
        agent = request.headers.get("user-agent", "")
        send_id = None
        async with db.acquire() as conn, conn.transaction():
            if data.key and not data.login:
                try:
                    token = await service.sign_in(conn, data.key, _rules(state), agent)
                except Invalid as exc:
                    return _login_page(state, 401, exc.detail, next)
                owes = False
            else:
                found = await users.sign_in(conn, data.login, data.password, state.settings.users)
                if isinstance(found, ApiError):
                    return _login_page(state, found.status_code, found.detail, next)
                token, session_id = await service.sign_in_user(conn, found, _rules(state), agent)
                person = oplog.Actor(
                    f"user:{found.login}", found.tenant_id, client_address(request)
                )
                session = f"session:{session_id}"
                await oplog.record(
                    conn, person, "session.sign_in", tenant_id=found.tenant_id, object=session
                )
                owes = users.needs_second_factor(found)
                if owes:
                    send_id, problem = await _send_code(conn, state, found, session_id)
            # A session this browser already had ends: one browser, one session.
            await service.sign_out(conn, request.cookies.get(COOKIE))
        if send_id is not None:
            await delivery.enqueue_send(db, state.redis, state.settings.delivery, send_id)
        target = CODE if owes else _safe_next(next) or f"{PREFIX}/"
        if owes and problem:  # a word, not the text: the link cannot carry someone's words
            target = f"{CODE}?problem=unsent"
        return Redirect(target, cookies=[_session_cookie(request, state, token)], status_code=303)

    @get("/code", opt={OWING_CODE: True})
    async def code_form(
        self, request: Request[Principal, Any, State], who: Viewer, problem: FromQuery[str] = ""
    ) -> Template:
        signed: service.Signed = request.auth
        error = UNSENT_CODE if problem == "unsent" else None
        return _page("code.html", who, owes=signed.owes_code, error=error, sent=False)

    @post("/code", status_code=303, opt={OWING_CODE: True})
    async def enter_code(
        self,
        request: Request[Principal, Any, State],
        state: State,
        who: Viewer,
        data: Annotated[CodeForm, Form],
    ) -> Response[Any]:
        same_origin(request)
        assert who.session_id is not None
        db: Database = state.db
        async with db.acquire() as conn, conn.transaction():
            refused = await users.check_code(
                conn, who.session_id, data.code.strip(), state.settings.users
            )
            if refused is None:
                await service.pass_second_factor(conn, who.session_id)
                session = f"session:{who.session_id}"
                await oplog.record(
                    conn, who, "session.second_factor", tenant_id=who.tenant_id, object=session
                )
        if refused is not None:
            return _page(
                "code.html", who, refused.status_code, owes=True, error=refused.detail, sent=False
            )
        return Redirect(f"{PREFIX}/", status_code=303)

    @post("/code/send", status_code=303, opt={OWING_CODE: True})
    async def resend_code(
        self, request: Request[Principal, Any, State], state: State, who: Viewer
    ) -> Response[Any]:
        same_origin(request)
        assert who.user_id is not None
        assert who.session_id is not None
        db: Database = state.db
        async with db.acquire() as conn, conn.transaction():
            user = await users.get(conn, who.user_id)
            assert user is not None
            send_id, problem = await _send_code(conn, state, user, who.session_id)
        if send_id is not None:
            await delivery.enqueue_send(db, state.redis, state.settings.delivery, send_id)
        status = 429 if problem else 200
        return _page("code.html", who, status, owes=True, error=problem or None, sent=not problem)

    @get("/invite/{token:str}", opt={PUBLIC: True})
    async def invite_form(self, conn: Conn, state: State, token: FromPath[str]) -> Template:
        user = await users.invited(conn, token)
        return _invite_page(state, 200, user, token, None)

    @post("/invite/{token:str}", status_code=303, opt={PUBLIC: True})
    async def accept_invite(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        state: State,
        token: FromPath[str],
        data: Annotated[PasswordForm, Form],
    ) -> Response[Any]:
        same_origin(request)
        user = await users.invited(conn, token)
        if data.password != data.confirm:
            return _invite_page(state, 422, user, token, "两次输入的密码不一致")
        try:
            async with conn.transaction():
                await users.accept_invite(conn, token, data.password, state.settings.users)
        except Invalid as exc:
            return _invite_page(state, 422, user, token, exc.detail)
        return Redirect(f"{LOGIN}?welcome={quote(user.login)}", status_code=303)

    @post("/logout", status_code=303, opt={PUBLIC: True})
    async def logout(self, request: Request[Any, Any, State], conn: Conn) -> Redirect:
        same_origin(request)
        gone = await service.sign_out(conn, request.cookies.get(COOKIE), client_address(request))
        if gone is not None and gone.tenant_id is not None:
            await oplog.record(conn, gone, "session.sign_out", tenant_id=gone.tenant_id)
        return _signed_out(request)

    @post("/logout/everywhere", status_code=303, opt={OWING_CODE: True})
    async def logout_everywhere(
        self, request: Request[Any, Any, State], conn: Conn, who: Viewer
    ) -> Redirect:
        same_origin(request)
        await service.sign_out_everywhere(conn, who)
        everywhere = {"everywhere": True}
        await oplog.record(
            conn, who, "session.sign_out", tenant_id=who.tenant_id, detail=everywhere
        )
        return _signed_out(request)

    @get("/sessions")
    async def sessions(
        self, conn: Conn, state: State, who: Viewer, done: FromQuery[str] = ""
    ) -> Template:
        listed = await service.own_sessions(conn, who, _rules(state))
        changed = done == "password"
        return _page("sessions.html", who, sessions=listed, changed=changed, error=None)

    @post("/sessions/password", status_code=303)
    async def change_password(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        state: State,
        who: Viewer,
        data: Annotated[PasswordForm, Form],
    ) -> Response[Any]:
        """The signed-in person's password changed (the current one first); their other
        sessions end, this one stays."""
        same_origin(request)
        refusal: ApiError | None = None
        try:
            if data.password != data.confirm:
                raise Invalid("两次输入的新密码不一致")
            async with conn.transaction():  # a wrong current password's count is committed
                refusal = await users.change_password(
                    conn, who, data.current, data.password, state.settings.users
                )
        except ApiError as exc:
            refusal = exc
        if refusal is None:
            return Redirect(f"{PREFIX}/sessions?done=password", status_code=303)
        listed = await service.own_sessions(conn, who, _rules(state))
        return _page(
            "sessions.html",
            who,
            refusal.status_code,
            sessions=listed,
            changed=False,
            error=refusal.detail,
        )

    @post("/sessions/{session_id:int}/end", status_code=303)
    async def end_session(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        who: Viewer,
        session_id: Annotated[int, Parameter(ge=1, le=2**62)],
    ) -> Redirect:
        same_origin(request)
        await service.end_session(conn, who, session_id)
        ended = f"session:{session_id}"
        await oplog.record(conn, who, "session.end", tenant_id=who.tenant_id, object=ended)
        if session_id == who.session_id:
            return _signed_out(request)
        return Redirect(f"{PREFIX}/sessions", status_code=303)

    @get("/users")
    async def users_page(
        self,
        conn: Conn,
        who: Viewer,
        tenant: Annotated[str, QueryParameter(max_length=12)] = "",
    ) -> Template:
        service.require(who, Scope.USERS_WRITE, "管理用户")
        return await _users_page(conn, who, tenant or who.tenant_code)

    @post("/users/invite")
    async def invite(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        state: State,
        who: Viewer,
        data: Annotated[InviteForm, Form],
    ) -> Template:
        same_origin(request)
        service.require(who, Scope.USERS_WRITE, "邀请用户")
        code = data.tenant or who.tenant_code
        try:
            roles = checked_roles(data)
            if not roles:
                raise Invalid("请至少选择一个角色")
            form = msgspec.convert(
                {
                    "login": data.login,
                    "display_name": data.display_name,
                    "phone": data.phone,
                    "roles": roles,
                },
                InviteIn,
            )
            async with conn.transaction():
                made = await users.invite(
                    conn, who, code, form, str(request.base_url), state.settings.users
                )
        except (ApiError, msgspec.ValidationError) as exc:
            if isinstance(exc, NotFound):
                raise
            detail = exc.detail if isinstance(exc, ApiError) else f"输入无效：{exc}"
            status = exc.status_code if isinstance(exc, ApiError) else 422
            return await _users_page(conn, who, code, status, error=detail, form=data)
        return await _users_page(conn, who, code, 201, invited=made)

    @post("/users/{login:str}", status_code=303)
    async def change_user(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        who: Viewer,
        login: FromPath[str],
        data: Annotated[RolesForm, Form],
        state: State,
        action: Annotated[
            Literal["roles", "disable", "enable", "reset"], QueryParameter()
        ] = "roles",
    ) -> Response[Any]:
        same_origin(request)
        service.require(who, Scope.USERS_WRITE, "管理用户")
        if action == "reset":
            return await self._reset(request, conn, state, who, login)
        change = (
            UpdateUser(roles=checked_roles(data) or None)
            if action == "roles"
            else UpdateUser(disabled=action == "disable")
        )
        try:
            async with conn.transaction():
                changed = await users.update_user(conn, who, login, change)
        except ApiError as exc:
            if isinstance(exc, NotFound):
                raise
            user = await users.managed(conn, who, login)
            return await _users_page(conn, who, user.tenant_code, exc.status_code, error=exc.detail)
        return Redirect(f"{PREFIX}/users?tenant={changed.tenant_code}", status_code=303)

    async def _reset(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        state: State,
        who: Principal,
        login: str,
    ) -> Template:
        """重置密码: the user's new one-time link, shown once on the users page."""
        user = await users.managed(conn, who, login)  # 404 outside the subtree
        try:
            async with conn.transaction():
                made = await users.reset_password(
                    conn, who, login, str(request.base_url), state.settings.users
                )
        except ApiError as exc:
            if isinstance(exc, NotFound):
                raise
            return await _users_page(conn, who, user.tenant_code, exc.status_code, error=exc.detail)
        return await _users_page(conn, who, user.tenant_code, 200, invited=made, reset=True)

    @get("/t/{code:str}")
    async def overview(
        self,
        read_conn: ReadConn,
        state: State,
        who: Viewer,
        code: FromPath[str],
        period: PeriodQuery = None,
        sort: Annotated[str, QueryParameter(max_length=10)] = "code",
        order: Annotated[Literal["asc", "desc"], QueryParameter()] = "asc",
    ) -> Template:
        key: SortKey = next((k for k in SORT_KEYS if k == sort), "code")
        view = await service.overview(
            read_conn,
            who,
            code,
            _month(period),
            sort=key,
            descending=order == "desc",
            list_price=state.settings.billing.list_price_micros,
        )
        return _page("overview.html", who, view=view)

    @get("/t/{code:str}/activity")
    async def activity(
        self,
        request: Request[Any, Any, State],
        state: State,
        who: Viewer,
        code: FromPath[str],
        period: PeriodQuery = None,
        saved: FromQuery[str] = "",
    ) -> Template:
        # Right after the viewer's own allocation (`saved`, the form's redirect) the page
        # reads the primary: a standby may not hold that change yet.
        async with reads.reading(state, request.scope, own_write=bool(saved)) as conn:
            view = await service.tenant_page(conn, who, code, _month(period))
        return _page("tenant.html", who, view=view, error=None, form=None, saved=saved[:20])

    @post("/t/{code:str}/quota", status_code=303)
    async def allocate(
        self,
        request: Request[Any, Any, State],
        conn: Conn,
        who: Viewer,
        code: FromPath[str],
        data: Annotated[QuotaForm, Form],
    ) -> Response[Any]:
        same_origin(request)
        month = _month(data.period or None)
        try:
            await service.allocate(conn, who, code, data.child, month, data.limit)
        except ApiError as exc:
            if isinstance(exc, service.SignInRequired):
                raise
            view = await service.tenant_page(conn, who, code, month)
            return _page(
                "tenant.html",
                who,
                exc.status_code,
                view=view,
                error=exc.detail,
                form=data,
                saved="",
            )
        target = f"{PREFIX}/t/{code}/activity?period={period_text(month)}&saved={data.child}"
        return Redirect(target, status_code=303)

    @get("/billing")
    async def billing(
        self, read_conn: ReadConn, who: Viewer, period: PeriodQuery = None
    ) -> Template:
        month = _month(period) if period else previous_period(current_period())
        view = await service.billing_page(read_conn, who, month)
        return _page("billing.html", who, view=view)

    # No request transaction (`conn`): the export reads on a connection of its own while the
    # browser downloads.
    @get("/billing/{period:str}/statement.csv")
    async def statement_csv(
        self, request: Request[Any, Any, State], state: State, who: Viewer, period: FromPath[str]
    ) -> Response[Any]:
        return await _export(request, state, who, period, "csv")

    @get("/billing/{period:str}/statement.xlsx")
    async def statement_xlsx(
        self, request: Request[Any, Any, State], state: State, who: Viewer, period: FromPath[str]
    ) -> Response[Any]:
        return await _export(request, state, who, period, "xlsx")


def _session_cookie(request: Request[Any, Any, State], state: State, token: str) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=token,
        path=PREFIX,
        max_age=int(_rules(state).session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=_secure(request, state),
    )


def _secure(request: Request[Any, Any, State], state: State) -> bool:
    """Whether the cookie is `Secure`: always with HUB_HTTP__SECURE_COOKIES (a hub reached only
    through HTTPS), else when the request came by HTTPS as uvicorn saw it. Behind a proxy that
    ends TLS that is its X-Forwarded-Proto, believed only from HUB_HTTP__TRUSTED_PROXIES: a
    client's own header changes nothing."""
    return bool(state.settings.http.secure_cookies) or request.url.scheme == "https"


def _login_page(state: State, status: int, error: str | None, next: str) -> Template:
    keys = _rules(state).key_sign_in
    return _page("login.html", None, status, error=error, next=_safe_next(next), keys=keys)


def _invite_page(
    state: State, status: int, user: UserRow, token: str, error: str | None
) -> Template:
    minimum = state.settings.users.password_min
    view = users.to_user(user)
    return _page("invite.html", None, status, user=view, token=token, error=error, minimum=minimum)


# Why the code page has no code to ask for yet, after a sign-in whose code could not be sent.
UNSENT_CODE = "验证码暂未发出（发送过于频繁，或平台暂时无法发送）：请稍后点“重新发送”"


async def _send_code(
    conn: asyncpg.Connection, state: State, user: UserRow, session_id: int
) -> tuple[int | None, str]:
    """Send a session's SMS code: the send's id to enqueue after commit, or why not."""
    try:
        async with conn.transaction():
            return await users.send_code(conn, user, session_id, state.settings), ""
    except ApiError as exc:
        if outage(exc) is not None:
            raise
        return None, exc.detail


async def _users_page(
    conn: asyncpg.Connection,
    who: Principal,
    code: str,
    status: int = 200,
    *,
    error: str | None = None,
    form: InviteForm | None = None,
    invited: NewInvite | None = None,
    reset: bool = False,
) -> Template:
    tenant = await tenants.get_visible(conn, who, code)
    listed = await users.list_users(conn, who, tenant.code)
    return _page(
        "users.html",
        who,
        status,
        tenant=tenant,
        users=listed,
        error=error,
        form=form,
        invited=invited,
        reset=reset,
        roles=ROLE_FIELDS,
        grantable={f for f, r in ROLE_FIELDS.items() if ROLE_SCOPES[r] <= who.scopes},
        # Whom the viewer may reset: not themself, nobody holding a role they lack.
        resettable={
            u.login
            for u in listed
            if u.login != who.login and all(ROLE_SCOPES[r] <= who.scopes for r in u.roles)
        },
    )


def _signed_out(request: Request[Any, Any, State]) -> Redirect:
    """To the sign-in page, the browser's cookie dropped (its session already ended here)."""
    gone = Cookie(
        key=COOKIE,
        value="",
        path=PREFIX,
        max_age=0,
        httponly=True,
        samesite="strict",
        secure=_secure(request, request.app.state),
    )
    return Redirect(LOGIN, cookies=[gone], status_code=303)


def _safe_next(target: str) -> str:
    """Only a dashboard path (never another site) to return to after signing in."""
    ok = target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target
    return target if ok else ""


async def _export(
    request: Request[Any, Any, State],
    state: State,
    who: Principal,
    period: str,
    fmt: Literal["csv", "xlsx"],
) -> Response[Any]:
    """A statement download: billing's own export, for the session's key (on the standby
    when it keeps up, hub.reads)."""
    service.require(who, Data.MONEY, "下载账单")
    month = _month(period)
    db = await reads.reader(state, request.scope)
    return await exports.statement_export(db, who, month, fmt)
