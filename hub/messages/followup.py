"""Follow-up: finding sends again, the replies linked to them, and acting on who has not replied
or was not reached.

A send's *family* is its first send and every reminder and resend that follows it
(`sends.follows` always names the first, so a reminder of a reminder is still one family). A
reply is linked to one send when it is stored (hub.delivery.inbound.store, by reply_waits);
"who has replied" asks the whole family, so a member who answered the reminder is not reminded
again and counts as having replied to the first send too.

Reminders and resends are new sends made by `messages.service.create_send` — the path
POST /v1/messages takes: the first send's tenant (its signature and extension, so replies come
back to it), its quota, content dedup, quiet hours; the caller's key as the actor. The routes
wrap them in the Idempotency-Key check as POST /v1/messages does (`once`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import msgspec

from hub import wire
from hub.calendar import days_window
from hub.db import fetch_planned
from hub.dedup import service as dedup
from hub.dedup.repository import StoredAnswer
from hub.errors import Conflict, Invalid
from hub.messages import repository as sql
from hub.messages import service
from hub.messages.repository import SendRow
from hub.messages.schemas import (
    FollowKind,
    FollowUpRequest,
    LinkedReply,
    ReplyPage,
    SendAccepted,
    SendFilters,
    SendListItem,
    SendPage,
    SendRequest,
)
from hub.messages.segments import MAX_CHARACTERS
from hub.oplog import service as oplog
from hub.settings import Settings
from tenants.service import Principal, get_by_id

# What a reminder's default text starts with: the first send's text again would be a copy the
# phone already has (content dedup would suppress it within its window).
REMIND_PREFIX = "提醒："
# The statuses a resend goes to: the message did not arrive.
UNREACHED = ("failed", "undelivered", "expired")


def like_pattern(text: str) -> str:
    """`text` anywhere, matched literally: LIKE's own characters escaped (ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _bounds(filters: SendFilters) -> tuple[object, object]:
    if filters.date_from and filters.date_to and filters.date_from > filters.date_to:
        raise Invalid(
            "`from` is after `to`",
            fields=[{"key": "from", "message": "after `to`", "source": "query"}],
        )
    return days_window(filters.date_from, filters.date_to)


async def list_sends(conn: asyncpg.Connection, who: Principal, filters: SendFilters) -> SendPage:
    """The caller's sends (with `subtree`, its descendants' too), newest first, filtered."""
    start, end = _bounds(filters)
    records = await fetch_planned(
        conn,
        sql.SENDS_PAGE,
        who.tenant_path,
        filters.subtree,
        filters.before,
        start,
        end,
        filters.dated == "due",
        filters.state,
        filters.has_status,
        like_pattern(filters.text) if filters.text else None,
        filters.sender,
        filters.reply_wanted,
        filters.limit + 1,
    )
    sends = [msgspec.convert(dict(r.items()), sql.ListedSend) for r in records[: filters.limit]]
    counts: dict[int, dict[str, int]] = {}
    for r in await conn.fetch(sql.SEND_STATUS_COUNTS, [s.id for s in sends]):
        counts.setdefault(r["send_id"], {})[r["status"]] = r["n"]
    items = [
        SendListItem(
            **msgspec.structs.asdict(s), statuses=dict(sorted(counts.get(s.id, {}).items()))
        )
        for s in sends
    ]
    more = len(records) > filters.limit
    return SendPage(items=items, next_before=items[-1].id if more and items else None)


async def replies(
    conn: asyncpg.Connection, who: Principal, send_id: int, after: int, limit: int
) -> ReplyPage:
    """Replies linked to the send's family, in the order they came."""
    send = await service.visible_send(conn, who, send_id)
    sends = await service.family(conn, send)
    records = await conn.fetch(sql.REPLIES_OF, sends, after, limit + 1)
    items = [msgspec.convert(dict(r.items()), LinkedReply) for r in records[:limit]]
    more = len(records) > limit
    return ReplyPage(items=items, next_after=items[-1].id if more and items else None)


async def targets(
    conn: asyncpg.Connection, send: SendRow, kind: FollowKind
) -> dict[str, str | None]:
    """Whom a follow-up of `send` goes to: its phones that have not replied to its family
    (remind), or whose message did not arrive (resend); each with its message's own body (a
    personal send's), else None."""
    if kind == "remind":
        rows = await conn.fetch(sql.NOT_REPLIED, send.id, await service.family(conn, send))
    else:
        rows = await conn.fetch(sql.UNREACHED, send.id)
    return {r["phone"]: r["body"] for r in rows}


def _texts(
    kind: FollowKind, data: FollowUpRequest, to: dict[str, str | None]
) -> dict[str, str] | None:
    """A follow-up of a personal send, without a text of its own, sends each phone the text
    its message had (a reminder with its prefix): the first send's values are not kept, and
    the roster may have changed since."""
    if data.body is not None or not any(to.values()):
        return None
    prefix = REMIND_PREFIX if kind == "remind" else ""
    return {phone: prefix + own for phone, own in to.items() if own is not None}


def _request(
    send: SendRow, kind: FollowKind, data: FollowUpRequest, to: list[str], personal: bool
) -> SendRequest:
    """The follow-up as a send's request; a personal send's texts are each checked on their
    own (`_texts`)."""
    body = data.body
    if body is None:
        body = REMIND_PREFIX + send.body if kind == "remind" else send.body
        if len(body) > MAX_CHARACTERS and not personal:  # the prefix made it too long
            raise Invalid(
                f"the reminder's default text is over {MAX_CHARACTERS} characters; give `body`",
                fields=[{"key": "body", "message": "give the reminder's text", "source": "body"}],
            )
    return SendRequest(
        to=list(to),
        body=body,
        priority=data.priority or send.priority,
        send_at=data.send_at,
        dedup=data.dedup,
        reply_wanted=send.reply_wanted,
    )


async def follow_up(
    conn: asyncpg.Connection,
    who: Principal,
    send_id: int,
    kind: FollowKind,
    data: FollowUpRequest,
    settings: Settings,
) -> SendAccepted:
    """A reminder or a resend of a send the caller may see: a new send of the send's tenant,
    linked to the first send of its family. 409 when there is nobody to send it to."""
    send = await service.visible_send(conn, who, send_id)
    if send.state == "review":
        raise Conflict(f"send {send.id} is waiting for review: follow it up once it has gone")
    if kind == "remind" and not send.reply_wanted:
        raise Conflict(f"send {send.id} asked for no reply: there is nobody to remind")
    to = await targets(conn, send, kind)
    if not to:
        nobody = "everyone has replied" if kind == "remind" else "no message failed"
        raise Conflict(f"send {send.id}: {nobody}; nothing to send", nobody=kind)
    request = _request(send, kind, data, list(to), personal=any(to.values()))
    service.authorize(who, request)
    tenant = await get_by_id(conn, send.tenant_id)
    assert tenant is not None  # tenants are never deleted
    accepted = await service.create_send(
        conn,
        tenant,
        who.actor,
        request,
        settings,
        follows=service.Follows(send.follows or send.id, kind),
        texts=_texts(kind, data, to),
        # Its first send's text (which went, approved or not caught) repeated: not reviewed
        # again; a text of its own is, like any send's.
        reviewed=data.body is not None,
    )
    await oplog.record(conn, who, f"send.{kind}", **service.send_logged(tenant, accepted))
    return accepted


async def once(
    conn: asyncpg.Connection,
    who: Principal,
    idempotency_key: str | None,
    request_hash: bytes,
    settings: Settings,
    make: Callable[[], Awaitable[SendAccepted]],
) -> SendAccepted | StoredAnswer:
    """Layer 1 around a creating call: the stored answer to a repeated Idempotency-Key (409
    while the first is in flight, 422 for another request under the same key), or `make()`'s
    answer, stored under the key in the same transaction."""
    if idempotency_key is not None:
        stored = await dedup.replay(conn, who.tenant_id, idempotency_key, request_hash)
        if stored is not None:
            return stored
    accepted = await make()
    if idempotency_key is not None:
        await dedup.remember(
            conn,
            who.tenant_id,
            idempotency_key,
            request_hash,
            202,
            wire.encode(accepted),
            settings.dedup.idempotency_ttl_seconds,
        )
    return accepted
