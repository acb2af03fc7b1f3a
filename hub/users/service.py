"""People's accounts: users with roles in one tenant, one-time invites, passwords (argon2id),
sign-in with lockout and back-off, and the second factor's SMS codes.

A person acts as a `tenants.service.Principal` whose scopes are their roles' (ROLE_SCOPES), so
the API's guards and the console's pages ask one question of keys and people alike. Who may
manage whom: a person with `users:write` (管理), or a key with it, manages the users of their
own tenant and of its subtree (anything else is the same 404), and never grants (or touches a
user holding) a role whose scopes they do not hold themselves.

Functions take the connection first and never commit. Sign-in and code checks *return* their
refusal rather than raising inside the caller's transaction: the failure they counted must be
committed with it (see the dashboard's handlers).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hub import calendar
from hub.errors import ApiError, Conflict, Forbidden, Invalid, NotFound, TooManyRequests
from hub.messages import service as messages
from hub.messages.numbers import Recipient, normalize
from hub.messages.schemas import SendRequest
from hub.oplog import service as oplog
from hub.settings import Settings, UsersSettings
from hub.users import repository as sql
from hub.users.repository import CodeCounts, CodeRow, InviteRow, UserRow
from hub.users.schemas import InviteIn, NewInvite, UpdateUser, User
from tenants import service as tenants
from tenants.repository import TenantRow
from tenants.scopes import ROLE_SCOPES, SECOND_FACTOR_ROLES, Role, role_scopes
from tenants.service import ROOT_CODE, Principal

# argon2-cffi's defaults are argon2id (RFC 9106's second recommendation: t=3, m=64 MiB, p=4).
_HASHER = PasswordHasher()
# Verified against when the login is unknown, so an unknown login takes as long as a known one.
_DUMMY_HASH = _HASHER.hash("hub: no such user, no such password")
MAX_PASSWORD = 128
# Actor of the second factor's sends (the operator's own, like `system:expiry`).
CODE_ACTOR = "system:second-factor"
INVITE_PREFIX = "/dashboard/invite/"


class SignInRefused(ApiError):
    """Unknown login, wrong password, no password yet: one answer for all of them."""

    status_code = 401
    code = "sign_in_refused"


class Locked(TooManyRequests):
    code = "locked"


class TooManyCodes(TooManyRequests):
    code = "too_many_codes"


class CodeRefused(Invalid):
    code = "code_refused"


class CodeNotSent(ApiError):
    status_code = 503
    code = "code_not_sent"


def user_not_found() -> NotFound:
    """The one answer for an unknown user and for one outside the caller's subtree."""
    return NotFound("user not found")


def _user(record: asyncpg.Record) -> UserRow:
    return msgspec.convert(dict(record.items()), UserRow)


def roles_of(user: UserRow) -> frozenset[Role]:
    return frozenset(Role(r) for r in user.roles)


def needs_second_factor(user: UserRow) -> bool:
    """Admins and approvers enter an SMS code before their session opens anything."""
    return bool(roles_of(user) & SECOND_FACTOR_ROLES)


def principal(user: UserRow, session_id: int | None = None) -> Principal:
    """The principal a signed-in person acts as: their tenant, their roles' scopes."""
    return Principal(
        tenant_id=user.tenant_id,
        tenant_code=user.tenant_code,
        tenant_path=user.tenant_path,
        scopes=role_scopes(roles_of(user)),
        suspended_by=user.suspended_by,
        user_id=user.id,
        login=user.login,
        session_id=session_id,
    )


def masked(phone: str) -> str:
    """+8613812341234 → 138****1234: enough to recognise one's own phone."""
    national = phone.removeprefix("+86")
    return f"{national[:3]}****{national[-4:]}"


def to_user(row: UserRow) -> User:
    return User(
        login=row.login,
        tenant_code=row.tenant_code,
        display_name=row.display_name,
        phone=masked(row.phone),
        roles=sorted(roles_of(row), key=list(Role).index),
        active=row.password_hash is not None,
        disabled=row.disabled,
        locked_until=row.locked_until,
        created_at=row.created_at,
        created_by=row.created_by,
    )


async def get(conn: asyncpg.Connection, user_id: int) -> UserRow | None:
    record = await conn.fetchrow(sql.USER_BY_ID, user_id)
    return None if record is None else _user(record)


# --- passwords ---------------------------------------------------------------------------------


def check_password(password: str, login: str, display_name: str, phone: str, minimum: int) -> None:
    """Long enough, not too long, and none of the person's own names or phone in it."""

    def field(message: str) -> list[dict[str, str]]:
        return [{"key": "password", "source": "body", "message": message}]

    if len(password) < minimum:
        raise Invalid(f"密码至少 {minimum} 个字符", fields=field("too short"))
    if len(password) > MAX_PASSWORD:
        raise Invalid(f"密码至多 {MAX_PASSWORD} 个字符", fields=field("too long"))
    lowered = password.casefold()
    own = [login, display_name, phone.removeprefix("+86")]
    if any(part and part.casefold() in lowered for part in own if len(part) >= 2):
        raise Invalid(
            "密码不能包含登录名、姓名或手机号",
            fields=field("contains own name"),
        )
    if len(set(password)) < 4:
        raise Invalid("密码过于简单：请混用更多不同的字符", fields=field("weak"))


async def hash_password(password: str) -> str:
    """argon2id, in a thread (tens of milliseconds of CPU and 64 MiB)."""
    return await asyncio.to_thread(_HASHER.hash, password)


async def _verify(encoded: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _HASHER.verify(encoded, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


# --- managing users ----------------------------------------------------------------------------


def _refuse_grant(who: Principal, roles: frozenset[Role], doing: str) -> None:
    """Nobody grants (or manages a holder of) a role whose scopes they do not hold."""
    missing = [r for r in Role if r in roles and not ROLE_SCOPES[r] <= who.scopes]
    if missing:
        names = "、".join(r.value for r in missing)
        raise Forbidden(f"不能{doing}自己没有的角色：{names}", roles=[r.value for r in missing])


def _phone(text: str) -> str:
    found = normalize(text)
    if not isinstance(found, Recipient):
        raise Invalid(
            "手机号必须是本人的中国大陆手机号（验证码发到这里）",
            fields=[{"key": "phone", "message": found.reason, "source": "body"}],
        )
    return found.phone


async def _new_invite(
    conn: asyncpg.Connection, user_id: int, actor: str, rules: UsersSettings
) -> tuple[str, datetime]:
    token = secrets.token_urlsafe(32)
    expires = calendar.now() + timedelta(hours=rules.invite_hours)
    await conn.execute(sql.END_INVITES, user_id)
    await conn.fetchval(sql.INSERT_INVITE, user_id, _digest(token), expires, actor)
    return token, expires


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


async def create_user(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    data: InviteIn,
    actor: str,
    password: str | None,
    rules: UsersSettings,
) -> UserRow:
    """A user of `tenant`, with a password (the CLI) or none yet (an invite follows)."""
    phone = _phone(data.phone)
    roles = sorted(set(data.roles), key=list(Role).index)
    if await conn.fetchval(sql.LOGIN_TAKEN, data.login):
        raise Conflict(f"登录名 {data.login} 已被使用", login_taken=data.login)
    hashed = None
    if password is not None:
        check_password(password, data.login, data.display_name, phone, rules.password_min)
        hashed = await hash_password(password)
    user_id = await conn.fetchval(
        sql.INSERT_USER, tenant.id, data.login, data.display_name, phone, roles, hashed, actor
    )
    if user_id is None:  # taken meanwhile
        raise Conflict(f"登录名 {data.login} 已被使用", login_taken=data.login)
    found = await get(conn, user_id)
    assert found is not None
    return found


async def invite(
    conn: asyncpg.Connection,
    who: Principal,
    code: str,
    data: InviteIn,
    base_url: str,
    rules: UsersSettings,
) -> NewInvite:
    """A new user of the tenant `code` (the caller's own or below it) and their one-time link,
    shown once; only its hash is kept."""
    tenant = await tenants.get_visible(conn, who, code)
    _refuse_grant(who, frozenset(data.roles), "授予")
    user = await create_user(conn, tenant, data, who.actor, None, rules)
    token, expires = await _new_invite(conn, user.id, who.actor, rules)
    invited = {"login": user.login, "roles": user.roles}  # never the link, never the phone
    await oplog.record(
        conn, who, "user.invite", tenant_id=tenant.id, object=f"user:{user.login}", after=invited
    )
    return NewInvite(
        user=to_user(user),
        invite_path=f"{INVITE_PREFIX}{token}",
        invite_url=f"{base_url.rstrip('/')}{INVITE_PREFIX}{token}",
        expires_at=expires,
    )


async def invite_existing(
    conn: asyncpg.Connection, user: UserRow, actor: str, rules: UsersSettings
) -> tuple[str, datetime]:
    """A one-time link for a user the operator created from the CLI without a password."""
    return await _new_invite(conn, user.id, actor, rules)


async def list_users(conn: asyncpg.Connection, who: Principal, code: str) -> list[User]:
    tenant = await tenants.get_visible(conn, who, code)
    return [to_user(_user(r)) for r in await conn.fetch(sql.USERS_OF_TENANT, tenant.id)]


async def managed(conn: asyncpg.Connection, who: Principal, login: str) -> UserRow:
    """A user of the caller's subtree (locked for the change), else 404."""
    record = await conn.fetchrow(sql.USER_IN_SUBTREE, login, who.tenant_path)
    if record is None:
        raise user_not_found()
    return _user(record)


async def update_user(
    conn: asyncpg.Connection, who: Principal, login: str, data: UpdateUser
) -> User:
    """Change a user's roles or disable (enable) them. Nobody changes their own account here,
    nor one holding, or given, a role they do not hold."""
    user = await managed(conn, who, login)
    if user.id == who.user_id:
        raise Forbidden("不能修改自己的角色或停用自己：请另一位管理员操作")
    _refuse_grant(who, roles_of(user), "管理持有")
    roles = None
    if data.roles is not None:
        _refuse_grant(who, frozenset(data.roles), "授予")
        roles = sorted(set(data.roles), key=list(Role).index)
    await conn.execute(sql.UPDATE_USER, user.id, roles, data.disabled)
    if data.disabled:
        await conn.execute(sql.END_INVITES, user.id)
    found = await get(conn, user.id)
    assert found is not None
    await _log_change(conn, who, user, found)
    return to_user(found)


async def _log_change(conn: asyncpg.Connection, who: Principal, was: UserRow, now: UserRow) -> None:
    """`user.roles` (before/after) and `user.disable` / `user.enable`, as they changed."""
    person: dict[str, Any] = {"tenant_id": now.tenant_id, "object": f"user:{now.login}"}
    if was.roles != now.roles:
        roles: dict[str, Any] = {"before": {"roles": was.roles}, "after": {"roles": now.roles}}
        await oplog.record(conn, who, "user.roles", **person, **roles)
    if was.disabled != now.disabled:
        action = "user.disable" if now.disabled else "user.enable"
        state: dict[str, Any] = {
            "before": {"disabled": was.disabled},
            "after": {"disabled": now.disabled},
        }
        await oplog.record(conn, who, action, **person, **state)


# --- invites -----------------------------------------------------------------------------------


async def _live_invite(conn: asyncpg.Connection, token: str) -> tuple[InviteRow, UserRow]:
    gone = NotFound("邀请链接无效、已使用或已过期：请邀请人重新邀请")
    if len(token) > 64:
        raise gone
    record = await conn.fetchrow(sql.INVITE_BY_TOKEN, _digest(token))
    if record is None:
        raise gone
    found = msgspec.convert(dict(record.items()), InviteRow)
    if found.used_at is not None or found.expires_at <= calendar.now():
        raise gone
    user = await get(conn, found.user_id)
    if user is None or user.disabled:
        raise gone
    return found, user


async def invited(conn: asyncpg.Connection, token: str) -> UserRow:
    """Whom a live invite is for (404 when it is not live)."""
    return (await _live_invite(conn, token))[1]


async def accept_invite(
    conn: asyncpg.Connection, token: str, password: str, rules: UsersSettings
) -> UserRow:
    """Set the invited user's password; the link is used up."""
    found, user = await _live_invite(conn, token)
    check_password(password, user.login, user.display_name, user.phone, rules.password_min)
    await conn.execute(sql.SET_PASSWORD, user.id, await hash_password(password))
    await conn.execute(sql.USE_INVITE, found.id)
    await conn.execute(sql.END_INVITES, user.id)
    return user


async def reset_password(
    conn: asyncpg.Connection, who: Principal, login: str, base_url: str, rules: UsersSettings
) -> NewInvite:
    """An admin resets a user's password (of the caller's subtree, holding no role the caller
    lacks, never the caller): the old one stops working, every session of theirs ends, and a new
    one-time link (shown once) lets them set another. Logged as `user.reset`."""
    user = await managed(conn, who, login)
    if user.id == who.user_id:
        raise Forbidden("不能重置自己的密码：请在“我的会话”页修改密码")
    _refuse_grant(who, roles_of(user), "管理持有")
    if user.disabled:
        raise Conflict("账户已停用：请先启用再重置密码")
    await conn.execute(sql.SET_PASSWORD, user.id, None)
    await conn.execute(sql.END_SESSIONS_OF, user.id, None)
    token, expires = await _new_invite(conn, user.id, who.actor, rules)
    await oplog.record(
        conn, who, "user.reset", tenant_id=user.tenant_id, object=f"user:{user.login}"
    )
    found = await get(conn, user.id)
    assert found is not None
    return NewInvite(
        user=to_user(found),
        invite_path=f"{INVITE_PREFIX}{token}",
        invite_url=f"{base_url.rstrip('/')}{INVITE_PREFIX}{token}",
        expires_at=expires,
    )


# --- sign-in -----------------------------------------------------------------------------------


def lock_for(failures: int, rules: UsersSettings) -> timedelta | None:
    """The back-off `failures` consecutive failures earn: none below `lock_after`, then
    lock_seconds doubling with each further failure, up to lock_max_seconds."""
    if failures < rules.lock_after:
        return None
    doubling = min(failures - rules.lock_after, 30)
    return timedelta(seconds=min(rules.lock_seconds * 2**doubling, rules.lock_max_seconds))


def _locked(until: datetime) -> Locked:
    return Locked(
        f"失败次数过多，账户已暂时锁定，请于 {calendar.shown(until, '%H:%M:%S')}（北京时间）后再试",
        locked_until=until,
    )


async def sign_in(
    conn: asyncpg.Connection,
    login: str,
    password: str,
    rules: UsersSettings,
    now: datetime | None = None,
) -> UserRow | ApiError:
    """The user whose login and password these are, or the refusal (returned, not raised: the
    failure it counted is to be committed). A locked account is refused without its password
    being tried; a disabled one only once the password is right."""
    now = now or calendar.now()
    refused = SignInRefused("登录名或密码错误")
    if len(password) > MAX_PASSWORD:
        return refused
    record = await conn.fetchrow(sql.USER_BY_LOGIN_FOR_UPDATE, login)
    user = None if record is None else _user(record)
    if user is None or user.password_hash is None:
        await _verify(_DUMMY_HASH, password)
        return refused
    if user.locked_until is not None and user.locked_until > now:
        return _locked(user.locked_until)
    if not await _verify(user.password_hash, password):
        failures = user.failed_attempts + 1
        lock = lock_for(failures, rules)
        until = None if lock is None else now + lock
        await conn.execute(sql.RECORD_ATTEMPT, user.id, failures, until)
        return refused if until is None else _locked(until)
    if user.disabled:
        return Forbidden("账户已停用：请联系本单位管理员")
    await conn.execute(sql.RECORD_ATTEMPT, user.id, 0, None)
    if _HASHER.check_needs_rehash(user.password_hash):
        await conn.execute(sql.SET_PASSWORD, user.id, await hash_password(password))
    return user


async def change_password(
    conn: asyncpg.Connection, who: Principal, current: str, new: str, rules: UsersSettings
) -> ApiError | None:
    """The signed-in person's new password, once their current one is right; their other
    sessions end. A wrong current password counts as a failed sign-in (the same lockout): the
    refusal is returned, not raised, so that its count is committed. Logged as
    `user.password`."""
    user = await get(conn, who.user_id) if who.user_id is not None else None
    if user is None:
        raise Forbidden("只有用户账户可以修改密码")
    checked = await sign_in(conn, user.login, current, rules)
    if isinstance(checked, SignInRefused):
        return Invalid("当前密码不正确", fields=[{"key": "current", "message": "wrong"}])
    if isinstance(checked, ApiError):
        return checked
    check_password(new, user.login, user.display_name, user.phone, rules.password_min)
    await conn.execute(sql.SET_PASSWORD, user.id, await hash_password(new))
    await conn.execute(sql.END_SESSIONS_OF, user.id, who.session_id)
    await oplog.record(
        conn, who, "user.password", tenant_id=user.tenant_id, object=f"user:{user.login}"
    )
    return None


# --- the second factor -------------------------------------------------------------------------


def _code_digest(session_id: int, code: str) -> bytes:
    return hashlib.sha256(f"{session_id}:{code}".encode()).digest()


def _refuse_codes(counts: CodeCounts, now: datetime, rules: UsersSettings) -> None:
    hour, day = timedelta(hours=1), timedelta(days=1)

    def wait(since: datetime | None, span: timedelta) -> int:
        return max(1, int(((since or now) + span - now).total_seconds()) + 1)

    gap = timedelta(seconds=rules.code_gap_seconds)
    if counts.last_for_user is not None and now - counts.last_for_user < gap:
        seconds = wait(counts.last_for_user, gap)
        raise TooManyCodes(f"验证码刚刚发送过，请 {seconds} 秒后再获取", retry_after=seconds)
    if counts.user_hour >= rules.codes_per_hour:
        seconds = wait(counts.oldest_user_hour, hour)
        raise TooManyCodes(
            f"一小时内最多获取 {rules.codes_per_hour} 次验证码，请 {seconds // 60 + 1} 分钟后再试",
            retry_after=seconds,
        )
    if counts.phone_hour >= rules.codes_per_hour:
        seconds = wait(counts.oldest_phone_hour, hour)
        raise TooManyCodes(
            f"此手机号一小时内最多接收 {rules.codes_per_hour} 条验证码，"
            f"请 {seconds // 60 + 1} 分钟后再试",
            retry_after=seconds,
        )
    if counts.phone_day >= rules.codes_per_phone_day:
        seconds = wait(counts.oldest_phone_day, day)
        raise TooManyCodes(
            f"此手机号一天内最多接收 {rules.codes_per_phone_day} 条验证码，请明天再试",
            retry_after=seconds,
        )


# What the stored send says in place of the code.
CODE_MASK = "******"


def code_text(code: str, rules: UsersSettings) -> str:
    """The second factor's SMS, with `code` (or CODE_MASK, as the send stores it)."""
    minutes = max(1, int(rules.code_seconds // 60))
    return (
        f"您的控制台登录验证码：{code}，{minutes} 分钟内有效。请勿告诉他人；如非本人操作，请忽略。"
    )


async def send_code(
    conn: asyncpg.Connection,
    user: UserRow,
    session_id: int,
    settings: Settings,
    now: datetime | None = None,
) -> int:
    """A new six-digit code for `session_id`, sent to the user's own phone through the hub's own
    send path: from the operator's root tenant (its quota and usage, not the user's county),
    urgent (quiet hours do not hold it), never deduplicated. Rate-limited per person and per
    phone (TooManyCodes, 429). Returns the send's id; the caller enqueues it after commit."""
    rules = settings.users
    now = now or calendar.now()
    await conn.execute(sql.LOCK_PHONE, user.phone)
    record = await conn.fetchrow(sql.CODE_COUNTS, user.id, user.phone, now)
    assert record is not None
    _refuse_codes(msgspec.convert(dict(record.items()), CodeCounts), now, rules)
    code = f"{secrets.randbelow(10**6):06d}"
    root = await tenants.get_by_code(conn, ROOT_CODE)
    if root is None:
        raise CodeNotSent("验证码暂时无法发送：平台尚未初始化")
    # The send keeps the placeholder; the code travels in the message's own text, which
    # delivery forgets once it went (a system send: no list or page shows it either).
    stored = SendRequest(
        to=[user.phone], body=code_text(CODE_MASK, rules), priority="urgent", dedup="off"
    )
    texts = {user.phone: code_text(code, rules)}
    try:
        async with conn.transaction():  # a savepoint: a refused send leaves nothing behind
            # Never reviewed: a sign-in code is the hub's own, and no reviewer may read it.
            sent = await messages.create_send(
                conn,
                root,
                CODE_ACTOR,
                stored,
                settings,
                now,
                texts=texts,
                system=True,
                reviewed=False,
            )
            await oplog.record(conn, CODE_ACTOR, "send.create", **messages.send_logged(root, sent))
    except ApiError as exc:
        raise CodeNotSent(f"验证码暂时无法发送（{exc.detail}），请联系平台运营方") from exc
    if sent.counts.accepted != 1:
        raise CodeNotSent("验证码无法发送到此手机号（号码无效或已退订平台短信），请联系管理员")
    await conn.execute(sql.END_SESSION_CODES, session_id, now)
    code_id = await conn.fetchval(
        sql.INSERT_CODE,
        user.id,
        session_id,
        user.phone,
        _code_digest(session_id, code),
        now,
        now + timedelta(seconds=rules.code_seconds),
    )
    await conn.execute(sql.SET_CODE_SEND, code_id, sent.id)
    return sent.id


async def check_code(
    conn: asyncpg.Connection,
    session_id: int,
    code: str,
    rules: UsersSettings,
    now: datetime | None = None,
) -> ApiError | None:
    """None when `code` is the session's live code (then used up), else the refusal
    (returned, not raised: the attempt it counted is to be committed)."""
    now = now or calendar.now()
    record = await conn.fetchrow(sql.LIVE_CODE, session_id)
    row = None if record is None else msgspec.convert(dict(record.items()), CodeRow)
    if row is None or row.expires_at <= now or row.attempts >= rules.code_attempts:
        return CodeRefused("验证码已失效，请重新获取")
    await conn.execute(sql.COUNT_ATTEMPT, row.id)
    if not hmac.compare_digest(_code_digest(session_id, code), row.code_sha256):
        left = rules.code_attempts - row.attempts - 1
        detail = f"验证码不正确，还可尝试 {left} 次" if left else "验证码不正确，请重新获取"
        return CodeRefused(detail, attempts_left=left)
    await conn.execute(sql.USE_CODE, row.id, now)
    return None
