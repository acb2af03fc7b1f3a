"""Sending: a send's recipients checked, deduplicated, reserved and written in one transaction.

Order inside the request's transaction, so that a 429 leaves nothing behind:
1. take the tenant's approved signature (409 naming the approval it awaits), render the body (or
   template) and count the segments of both;
2. gather recipients from `to`, tags and contact ids; normalise them (layer 2 drops repeats; bad
   numbers are rejected one by one);
3. write the send and, by COPY, one message per unique valid recipient (opted-out phones as
   `opted_out`). A large send's numbers are normalised as the COPY takes them (`_Unchecked`):
   Python checks them on one core while PostgreSQL writes on the other;
4. apply the tenant's review rules; claim content keys (layer 3): messages whose key another
   message holds become `deduplicated`;
5. reserve the segments of what is left, once for the whole send (429 aborts everything).
"""

from __future__ import annotations

import sys
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Callable, Container, Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import asyncpg
import msgspec

from hub import calendar
from hub.billing import service as billing
from hub.calendar import business_day, period_of
from hub.contacts import service as contacts
from hub.db import in_turns
from hub.dedup import service as dedup
from hub.dedup.repository import Holder
from hub.errors import Conflict, Forbidden, Invalid, NotFound
from hub.messages import personal
from hub.messages import repository as sql
from hub.messages.numbers import Collected, Recipient, Rejected, normalize_all_in_turns
from hub.messages.repository import SendRow
from hub.messages.schedule import QuietHours, clock, held_until
from hub.messages.schemas import (
    ArchivedReply,
    ArchivedSend,
    Counts,
    FollowKind,
    MessagePage,
    MessageView,
    QuietHoursSetting,
    SendAccepted,
    SendPreview,
    SendRequest,
    SendState,
    SendSummary,
    SendView,
)
from hub.messages.segments import MAX_CHARACTERS, Segments, count_segments, signed
from hub.oplog import service as oplog
from hub.people import service as people
from hub.quota import service as quota
from hub.reviews import service as reviews
from hub.settings import Settings
from hub.signatures import service as signatures
from hub.templates import service as templates
from tenants.repository import TenantRow
from tenants.scopes import Data, Scope, grants, scope_for
from tenants.service import Principal, ancestry_paths, get_by_id

OPT_OUT_CHUNK = 10_000
# A send to at least this many numbers has them normalised as its messages are written (the COPY
# takes each as it is checked) rather than before: a million take two seconds of Python, which
# otherwise ran while PostgreSQL waited. Provided the send's texts are all one, no phone was ever
# erased, and the tenant has at most OPT_OUTS_READ_WHOLE opt-outs (read whole, to mark the
# messages as the numbers come).
STREAM_FROM = 10_000
OPT_OUTS_READ_WHOLE = 50_000
# A send of at most this many recipients writes its messages by INSERT, not COPY.
INSERTED = 100
# A message as written: send, tenant, phone, carrier, status, segments, body (MESSAGE_COLUMNS;
# a COPY adds each row's id).
MessageRecord = tuple[int, int, str | None, str, str, int, str | None]


def _too_long(text: str) -> Invalid:
    return Invalid(
        f"the message with its signature is {len(text)} characters; at most {MAX_CHARACTERS}",
        fields=[
            {
                "key": "body",
                "message": f"over {MAX_CHARACTERS} characters with the signature",
                "source": "body",
            }
        ],
    )


async def _body(conn: asyncpg.Connection, tenant: TenantRow, request: SendRequest) -> str:
    """The text to send: the body as given, or the rendered template (exactly one of them)."""
    if (request.body is None) == (request.template is None):
        raise Invalid(
            "give either `body` or `template`, not both and not neither",
            fields=[
                {"key": "body", "message": "exactly one of body and template", "source": "body"}
            ],
        )
    if request.body is not None:
        return request.body
    assert request.template is not None
    return await templates.render(conn, ancestry_paths(tenant.path), request.template, request.vars)


class _Gathered(msgspec.Struct, frozen=True):
    """A send's numbers as given, from `to`, tags and contact ids (not normalised yet)."""

    raws: list[str | int]
    unknown_contacts: list[Rejected]

    def submitted(self) -> int:
        return len(self.raws) + len(self.unknown_contacts)


async def _gather(conn: asyncpg.Connection, tenant: TenantRow, request: SendRequest) -> _Gathered:
    if not (request.to or request.to_tags or request.to_contacts):
        raise Invalid(
            "no recipients: give `to`, `to_tags` or `to_contacts`",
            fields=[{"key": "to", "message": "no recipients", "source": "body"}],
        )
    from_roster, unknown_contacts = await contacts.phones_for(
        conn, tenant, request.to_tags, request.to_contacts, request.subtree
    )
    return _Gathered([*request.to, *from_roster], unknown_contacts)


class _Unchecked(msgspec.Struct, frozen=True):
    """A large send's numbers, normalised as its messages are written (STREAM_FROM)."""

    raws: list[str | int]
    # Every phone that opted out of the tenant's messages.
    opt_outs: frozenset[str]


async def _unchecked(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    gathered: _Gathered,
    body: str,
    texts: dict[str, str] | None,
) -> _Unchecked | None:
    """`gathered`'s numbers to normalise as the send's messages are written, or None when they
    are to be normalised first: a small send, a personal one (each text needs its recipient's
    roster values first), one while erased phones are kept (each phone is checked against them
    first), or a tenant with many opt-outs."""
    if len(gathered.raws) < STREAM_FROM or texts is not None or templates.variables(body):
        return None
    if await people.any_erased(conn):
        return None
    rows = await conn.fetch(sql.OPT_OUTS_OF, tenant.id, OPT_OUTS_READ_WHOLE + 1)
    if len(rows) > OPT_OUTS_READ_WHOLE:
        return None
    return _Unchecked(gathered.raws, frozenset(r["phone"] for r in rows))


async def _opted_out(conn: asyncpg.Connection, tenant: TenantRow, phones: list[str]) -> set[str]:
    """The phones that opted out of the tenant's messages, asked OPT_OUT_CHUNK at a time: one
    array of a million phones takes asyncpg a second of CPU to encode, stalling the process."""
    found: set[str] = set()
    for start in range(0, len(phones), OPT_OUT_CHUNK):
        chunk = phones[start : start + OPT_OUT_CHUNK]
        found.update(r["phone"] for r in await conn.fetch(sql.OPTED_OUT, tenant.id, chunk))
    return found


async def _write_messages(
    conn: asyncpg.Connection, send_id: int, tenant: TenantRow, plan: _Plan, keyed: bool
) -> _Plan:
    """One message per recipient, by COPY (a send may have a million): the rows are generated
    as COPY consumes them, never held as a list. A personal send's message keeps its own body;
    a message to an erased phone keeps neither (opted out: it goes nowhere). Returns the plan
    with its recipients checked: a large send's numbers are normalised as COPY takes them (and,
    when `keyed`, their content keys computed with their messages' ids, while PostgreSQL
    writes), and its counts of repeats and rejects written once they are known."""
    unchecked, collected = plan.unchecked, Collected()
    if unchecked is None:
        await _copy_messages(conn, send_id, tenant, plan, in_turns(plan.recipients))
        return plan
    opt_outs = unchecked.opt_outs
    keys, ids = bytearray(), array("q")
    key = dedup.keyer(plan.body)

    def keying(r: Recipient, message_id: int) -> None:
        if r.phone not in opt_outs:
            keys.extend(key(r.phone))
            ids.append(message_id)

    recipients = collected.stream_in_turns(unchecked.raws)
    await _copy_messages(
        conn, send_id, tenant, plan, recipients, opt_outs, keying if keyed else None
    )
    checked = msgspec.structs.replace(
        plan,
        recipients=list(collected.seen.values()),
        rejected=collected.rejected + plan.rejected,
        repeats=collected.repeats,
        opted_out={p for p in collected.seen if p in opt_outs},
        unchecked=None,
        known=dedup.KnownKeys(keys, ids) if keyed else None,
    )
    rejected = msgspec.json.encode(checked.rejected).decode()
    await conn.execute(sql.SET_CHECKED, send_id, checked.repeats, rejected)
    return checked


async def _copy_messages(
    conn: asyncpg.Connection,
    send_id: int,
    tenant: TenantRow,
    plan: _Plan,
    recipients: AsyncIterator[Recipient],
    opted_out: Container[str] | None = None,
    written: Callable[[Recipient, int], None] | None = None,
) -> None:
    """The rows of `recipients` (which give the event loop its turns), COPYed as they come,
    each with an id of its own from `hub_message_ids` (one per number, at most: the month is
    worked out once, not for each row by the column's default); `written` is told each row's
    recipient and id as it goes. A send of at most INSERTED recipients is written by one
    INSERT (for a row or a few, COPY costs more: PostgreSQL sets up a COPY and its routing
    through the partitions for each). `opted_out`: the plan's, unless given."""
    bodies = plan.personal.bodies if plan.personal else {}
    erased = plan.erased
    opted_out = plan.opted_out if opted_out is None else opted_out

    def row(r: Recipient) -> MessageRecord:
        return (
            send_id,
            tenant.id,
            None if r.phone in erased else r.phone,
            r.carrier,
            "opted_out" if r.phone in opted_out else "accepted",
            plan.segments_of(r.phone),
            None if r.phone in erased else bodies.get(r.phone),
        )

    if plan.unchecked is None and len(plan.recipients) <= INSERTED:
        if plan.recipients:  # (`recipients` are these)
            await conn.execute(sql.INSERT_MESSAGES, *zip(*map(row, plan.recipients), strict=True))
        return
    most = len(plan.unchecked.raws) if plan.unchecked else len(plan.recipients)
    ids = array("q", await conn.fetchval(sql.NEW_MESSAGE_IDS, most))
    if sys.byteorder == "little":
        ids.byteswap()  # int8send is big-endian
    new_ids = iter(ids)

    async def records() -> AsyncIterator[tuple[object, ...]]:
        async for r in recipients:
            message_id = next(new_ids)
            if written is not None:
                written(r, message_id)
            yield (*row(r), message_id)

    columns = (*sql.MESSAGE_COLUMNS, "id")
    await conn.copy_records_to_table("messages", columns=columns, records=records())


async def _deduplicate(
    conn: asyncpg.Connection,
    send_id: int,
    tenant: TenantRow,
    body: str | dict[str, str],
    phones: list[str],
    window_seconds: float,
    due_at: datetime,
    known: dedup.KnownKeys | None = None,
) -> dict[str, Holder]:
    """Layer 3: mark messages whose content key another message holds; returns, per phone, who
    holds it. A duplicate of a copy already delivered is settled at once; one whose original's
    outcome is not known yet relies on it (done_at unset) and keeps its segments reserved until
    it is (see `dedup.follow`)."""
    duplicates = await dedup.claim_send(
        conn, send_id, tenant.id, body, phones, window_seconds, due_at, known
    )
    if duplicates:
        await conn.execute(
            sql.MARK_DUPLICATES,
            send_id,
            list(duplicates),
            [h.message_id for h in duplicates.values()],
            [h.tenant_id for h in duplicates.values()],
            [h.gone for h in duplicates.values()],
        )
    return duplicates


async def quiet_hours_for(
    conn: asyncpg.Connection, tenant: TenantRow, settings: Settings
) -> tuple[QuietHours, str]:
    """The tenant's own quiet hours, else the operator's; and which of the two."""
    own = await conn.fetchrow(sql.QUIET_HOURS, tenant.id)
    if own is not None:
        return QuietHours(enabled=own["enabled"], starts=own["starts"], ends=own["ends"]), "tenant"
    hub = settings.messages
    return QuietHours(hub.quiet_hours, clock(hub.quiet_starts), clock(hub.quiet_ends)), "operator"


async def set_quiet_hours(
    conn: asyncpg.Connection, tenant: TenantRow, setting: QuietHoursSetting
) -> None:
    await conn.execute(
        sql.SET_QUIET_HOURS, tenant.id, setting.enabled, clock(setting.starts), clock(setting.ends)
    )


def send_logged(tenant: TenantRow, sent: SendAccepted) -> dict[str, Any]:
    """What the operation log records of a send (`send.create`): its counts, never its text or
    phones (those stay with the send, read with messages:read)."""
    detail = {"state": sent.state, "counts": sent.counts, "segments": sent.segments}
    return {"tenant_id": tenant.id, "object": f"send:{sent.id}", "detail": detail}


def _free_text(request: SendRequest) -> bool:
    """Whether the review rules see a send as free text: a body of its own, or an approved
    template whose variables carry a text of their own (templates.carries_free_text)."""
    if request.template is None:
        return True
    filled = [*request.vars.values(), *(v for own in request.values.values() for v in own.values())]
    return templates.carries_free_text(filled)


def authorize(who: Principal, request: SendRequest) -> None:
    """An urgent send goes past quiet hours and ahead of every normal and bulk send: only keys
    granted `messages:urgent` may ask for it (403 before anything is read or written)."""
    if request.priority == "urgent" and Scope.MESSAGES_URGENT not in who.scopes:
        raise Forbidden(
            f"urgent sends need the {Scope.MESSAGES_URGENT} scope, granted by a key that holds "
            "it; send as normal, or ask a tenant above for it",
            scope=Scope.MESSAGES_URGENT.value,
        )


class _Timing(msgspec.Struct, frozen=True):
    state: SendState
    due_at: datetime
    held_until: datetime | None
    # The month whose quota it uses: the one it was asked to go in (`send_at`, or now). Quiet
    # hours may hold it into the next month; a notice sent at 23:30 on the 31st still uses the
    # month it was sent in, as its sender expects.
    period: date


async def _timing(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    request: SendRequest,
    settings: Settings,
    now: datetime,
) -> _Timing:
    return await timing_of(conn, tenant, request.send_at, request.priority, settings, now)


async def timing_of(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    send_at: datetime | None,
    priority: str,
    settings: Settings,
    now: datetime,
) -> _Timing:
    """When a send asked for `send_at` may go, were it sent `now`, and what state that puts it
    in (a send approved after review is timed so, at its approval)."""
    due = send_at if send_at is not None and send_at > now else now
    days = settings.messages.schedule_days
    if due > now + timedelta(days=days):
        raise Invalid(
            f"send_at is more than {days} days ahead",
            fields=[{"key": "send_at", "message": f"at most {days} days ahead", "source": "body"}],
        )
    held = None
    if priority != "urgent":
        held = held_until(due, (await quiet_hours_for(conn, tenant, settings))[0])
    state: SendState = "scheduled" if due > now else "held" if held else "queued"
    return _Timing(state=state, due_at=held or due, held_until=held, period=period_of(due))


class Follows(msgspec.Struct, frozen=True):
    """A follow-up names the first send of its family and what it is to it."""

    send_id: int
    kind: FollowKind


class _Plan(msgspec.Struct, frozen=True):
    """What a send would be, read and never written: the first two steps of the module's order,
    shared by `create_send` and `preview_send` so the two cannot disagree. (A large send's plan
    for writing leaves its numbers `unchecked`: `_write_messages` checks them as it writes.)"""

    signature: str
    timing: _Timing
    body: str
    # The body's segments, the same for every recipient unless the send is personal.
    segments: Segments
    recipients: list[Recipient]
    rejected: list[Rejected]
    repeats: int
    submitted: int
    opted_out: set[str]
    # Of those, phones the operator erased: their messages are written without the phone.
    erased: set[str]
    # Each recipient's own text, when the body holds roster placeholders ({姓名}).
    personal: personal.Personal | None
    # A large send's numbers before they are normalised (then `recipients`, `repeats` and
    # `opted_out` are empty and `rejected` holds only the unknown contacts): `_write_messages`
    # checks them.
    unchecked: _Unchecked | None = None
    # The content keys of the recipients not opted out, in order, and their messages, when
    # the keys were computed as the numbers were checked.
    known: dedup.KnownKeys | None = None

    def segments_of(self, phone: str) -> int:
        return self.personal.segments[phone] if self.personal else self.segments.count

    def segments_for(self, phones: Iterable[str]) -> int:
        return sum(self.segments_of(p) for p in phones)

    def most_segments(self) -> int:
        """What the dearest message costs: a send's `segments_per_message`."""
        if self.personal is None:
            return self.segments.count
        return max(self.personal.segments.values(), default=self.segments.count)

    def encoding(self) -> str:
        return self.personal.encoding if self.personal else self.segments.encoding

    def bodies(self) -> str | dict[str, str]:
        """The text content dedup keys on: one body, or each recipient's own."""
        return self.personal.bodies if self.personal else self.body


async def _plan(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    request: SendRequest,
    settings: Settings,
    now: datetime,
    texts: dict[str, str] | None = None,
    *,
    written: bool = False,
) -> _Plan:
    """`texts`: each phone's own body, given whole (a follow-up of a personal send).
    `written`: the plan is for writing the send (a large one's numbers may then be left for
    `_write_messages` to check)."""
    signature = await signatures.for_sending(conn, tenant)
    timing = await _timing(conn, tenant, request, settings, now)
    body = await _body(conn, tenant, request)
    text = signed(signature, body)
    own: personal.Personal | None
    if len(text) > MAX_CHARACTERS and not (texts or templates.variables(body)):
        raise _too_long(text)  # a personal one's texts are each checked on their own
    gathered = await _gather(conn, tenant, request)
    unchecked = await _unchecked(conn, tenant, gathered, body, texts) if written else None
    if unchecked is not None:
        return _Plan(
            signature=signature,
            timing=timing,
            body=body,
            segments=count_segments(text),
            recipients=[],
            rejected=gathered.unknown_contacts,
            repeats=0,
            submitted=gathered.submitted(),
            opted_out=set(),
            erased=set(),
            personal=None,
            unchecked=unchecked,
        )
    recipients, rejected, repeats = await normalize_all_in_turns(gathered.raws)
    rejected += gathered.unknown_contacts
    if texts is not None:
        recipients, unfilled, own = personal.own_texts(signature, body, recipients, texts)
    else:
        recipients, unfilled, own = await personal.personalise(
            conn,
            tenant,
            signature,
            body,
            recipients,
            request.subtree,
            request.template is not None,
            request.values,
        )
    phones = [r.phone for r in recipients]
    # A phone the operator erased (hub.people) is opted out of every tenant's messages.
    erased = await people.erased_among(conn, settings.people, phones)
    opted_out = await _opted_out(conn, tenant, phones) | erased
    return _Plan(
        signature=signature,
        timing=timing,
        body=body,
        segments=count_segments(text),
        recipients=recipients,
        rejected=rejected + unfilled,
        repeats=repeats,
        submitted=gathered.submitted(),
        opted_out=opted_out,
        erased=erased,
        personal=own,
    )


def at_list_price(segments: int, settings: Settings) -> int:
    """What `segments` cost at list price, micro-yuan: a send's `list_price_micros`."""
    return segments * settings.billing.list_price_micros


async def preview_send(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    request: SendRequest,
    settings: Settings,
    now: datetime | None = None,
) -> SendPreview:
    """What `create_send` would answer for `request` now, without writing anything: the same
    plan, the content keys looked up instead of claimed, the quota read instead of reserved."""
    now = now or calendar.now()
    plan = await _plan(conn, tenant, request, settings, now)
    candidates = [r for r in plan.recipients if r.phone not in plan.opted_out]
    duplicates: set[str] = set()
    if request.dedup == "on":
        duplicates = await dedup.would_hold(
            conn,
            tenant.id,
            plan.bodies(),
            [r.phone for r in candidates],
            plan.timing.due_at,
            request.priority if plan.timing.state == "queued" else None,
        )
    going = [r for r in candidates if r.phone not in duplicates]
    caught = await reviews.caught(
        conn, tenant, free_text=_free_text(request), recipients=len(candidates)
    )
    state: SendState = (
        "review" if caught is not None and request.priority != "urgent" else plan.timing.state
    )
    by_carrier: Counter[str] = Counter()
    for r in going:
        by_carrier[r.carrier] += plan.segments_of(r.phone)
    total = sum(by_carrier.values())
    month = plan.timing.period
    cost = await billing.quote(conn, month, dict(by_carrier), settings.billing.list_price_micros)
    available = (await quota.get_quota(conn, tenant, month)).available
    return SendPreview(
        signature=f"【{plan.signature}】",
        text=signed(plan.signature, plan.body),
        example=next((signed(plan.signature, plan.personal.bodies[r.phone]) for r in going), None)
        if plan.personal
        else None,
        state=state,
        due_at=plan.timing.due_at,
        held_until=plan.timing.held_until,
        counts=Counts(
            accepted=len(going),
            deduplicated=len(duplicates),
            opted_out=len(plan.opted_out),
            rejected=len(plan.rejected),
            repeated=plan.repeats,
        ),
        rejected=plan.rejected,
        encoding=plan.encoding(),
        segments_per_message=plan.most_segments(),
        segments=total,
        list_price_micros=at_list_price(total, settings),
        cost_micros=cost,
        period=f"{month:%Y-%m}",
        quota_available=available,
    )


class Claimed(msgspec.Struct, frozen=True):
    """What a claim of a send's content keys found: the phones whose key another message
    holds, the segments of the messages that go, and those of the copies relying on an original
    whose outcome is not known yet (they stay reserved: should it never arrive, they go)."""

    duplicates: dict[str, Holder]
    going: int
    relying: int


class ToClaim(Protocol):
    """A message to claim a key for: a Recipient of a new send, a ToGo of an approved one."""

    @property
    def phone(self) -> str: ...

    @property
    def carrier(self) -> str: ...


async def claim_keys(
    conn: asyncpg.Connection,
    send_id: int,
    tenant: TenantRow,
    bodies: str | dict[str, str],
    recipients: Sequence[ToClaim],
    segments_of: Callable[[str], int],
    dedup_on: bool,
    settings: Settings,
    due_at: datetime,
    known: dedup.KnownKeys | None = None,
) -> Claimed:
    """Layer 3 for a send's messages that are to go (written already, the send's state and
    due time set): claim their keys, mark the duplicates, and count what dedup saved at once
    (duplicates of copies already delivered) on the tenant's statement. A new send claims so
    before it reserves; a send approved after review, when approved (then releasing what it
    had reserved for the duplicates settled here). `segments_of`: a recipient's segments, by
    phone (a million recipients need no object each to carry them). `known`: the recipients'
    content keys and messages, when known already."""
    duplicates: dict[str, Holder] = {}
    if dedup_on:
        phones = [r.phone for r in recipients]
        window = settings.dedup.window_seconds
        duplicates = await _deduplicate(
            conn, send_id, tenant, bodies, phones, window, due_at, known
        )
    settled = {p for p, h in duplicates.items() if h.gone}
    if settled:  # what dedup saved, per carrier, for the tenant's statement
        saved: Counter[str] = Counter()
        for r in recipients:
            if r.phone in settled:
                saved[r.carrier] += segments_of(r.phone)
        day = business_day()
        await billing.record_usage(
            conn, "dedup", {(tenant.id, c, day): n for c, n in saved.items()}
        )
    going = sum(segments_of(r.phone) for r in recipients if r.phone not in duplicates)
    waiting = duplicates.keys() - settled  # once: per recipient, a million duplicates took hours
    relying = sum(segments_of(r.phone) for r in recipients if r.phone in waiting)
    return Claimed(duplicates=duplicates, going=going, relying=relying)


async def create_send(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    actor: str,
    request: SendRequest,
    settings: Settings,
    now: datetime | None = None,
    follows: Follows | None = None,
    texts: dict[str, str] | None = None,
    system: bool = False,
    *,
    reviewed: bool = True,
) -> SendAccepted:
    """`texts`: each phone's own body given whole, in place of filling the body's placeholders
    (a follow-up of a personal send: the text its first message had). `system`: the hub's own
    send (a second-factor code), shown by no list or page; its `texts` are forgotten once
    delivery is done with them (hub.delivery). `reviewed`: whether the tenant's review rules
    apply (hub.reviews); a send they catch waits in `review`, its quota reserved and its keys
    unclaimed (hub.messages.review), unless it is urgent: that goes at once and is reviewed
    after the fact."""
    now = now or calendar.now()
    plan = await _plan(conn, tenant, request, settings, now, texts, written=True)
    timing = plan.timing
    send_id: int = await conn.fetchval(
        sql.INSERT_SEND,
        tenant.id,
        plan.signature,
        plan.body,
        plan.encoding(),
        plan.most_segments(),
        request.priority,
        request.dedup == "on",
        plan.submitted,
        plan.repeats,
        msgspec.json.encode(plan.rejected).decode(),
        actor,
        timing.state,
        request.send_at,
        timing.held_until,
        timing.due_at,
        request.reply_wanted,
        follows.send_id if follows else None,
        follows.kind if follows else None,
        system,
    )
    dedup_on = request.dedup == "on"
    plan = await _write_messages(conn, send_id, tenant, plan, keyed=dedup_on)
    rejected, opted_out = plan.rejected, plan.opted_out
    candidates = [r for r in plan.recipients if r.phone not in opted_out]
    caught = None
    if reviewed:
        caught = await reviews.caught(
            conn, tenant, free_text=_free_text(request), recipients=len(candidates)
        )
    waits = caught is not None and request.priority != "urgent"
    state: SendState = "review" if waits else timing.state
    if caught is not None:
        hours = settings.messages.review_hours
        await conn.execute(sql.MARK_REVIEW, send_id, caught, hours, not waits)
    if request.reply_wanted:
        await conn.execute(sql.AWAIT_REPLIES, send_id)
    if waits:  # its keys are claimed when it is approved, as if sent then
        going = plan.segments_for(r.phone for r in candidates)
        claimed = Claimed(duplicates={}, going=going, relying=0)
    else:
        claimed = await claim_keys(
            conn,
            send_id,
            tenant,
            plan.bodies(),
            candidates,
            plan.segments_of,
            dedup_on,
            settings,
            timing.due_at,
            known=plan.known,
        )
    duplicates, total = claimed.duplicates, claimed.going
    accepted = len(candidates) - len(duplicates)
    reserved = total + claimed.relying
    reservation_id = None
    if reserved:
        # Charged to its month, and held until it can have been delivered.
        wait = (timing.due_at - now).total_seconds()
        reservation = await quota.reserve(
            conn,
            tenant,
            reserved,
            f"send:{send_id}",
            actor,
            ttl_seconds=wait + settings.quota.reservation_ttl_seconds,
            period=timing.period,
            leases=settings.quota,
        )
        reservation_id = reservation.id
        if waits:  # kept until decided; the review's expiry releases it
            await quota.set_expiry(conn, [reservation.id], None)
    price = at_list_price(total, settings)
    await conn.execute(sql.FINISH_SEND, send_id, reservation_id, total, price)
    return SendAccepted(
        id=send_id,
        state=state,
        due_at=timing.due_at,
        held_until=timing.held_until,
        counts=Counts(
            accepted=accepted,
            deduplicated=len(duplicates),
            opted_out=len(opted_out),
            rejected=len(rejected),
            repeated=plan.repeats,
        ),
        rejected=rejected,
        encoding=plan.encoding(),
        segments_per_message=plan.most_segments(),
        segments=total,
        list_price_micros=price,
    )


async def visible_send(conn: asyncpg.Connection, who: Principal, send_id: int) -> SendRow:
    record = await conn.fetchrow(sql.SEND_IN_SUBTREE, send_id, who.tenant_path)
    if record is None:
        raise NotFound("send not found")
    return msgspec.convert(dict(record.items()), SendRow)


async def get_send(conn: asyncpg.Connection, who: Principal, send_id: int) -> SendView:
    send = await visible_send(conn, who, send_id)
    counts = {r["status"]: r["n"] for r in await conn.fetch(sql.STATUS_COUNTS, send_id)}
    return SendView(
        id=send.id,
        tenant=send.tenant_code,
        state=send.state,
        send_at=send.send_at,
        held_until=send.held_until,
        due_at=send.due_at,
        signature=f"【{send.signature}】",
        body=send.body,
        priority=send.priority,
        dedup=send.dedup,
        encoding=send.encoding,
        segments_per_message=send.segments_each,
        segments=send.segments,
        list_price_micros=send.list_price_micros,
        created_at=send.created_at,
        statuses=counts,
        rejected=msgspec.json.decode(send.rejects, type=list[Rejected]),
        sender=send.actor,
        reply_wanted=send.reply_wanted,
        follows=send.follows,
        follow_kind=send.follow_kind,
        review_reason=send.review_reason,
        review_due_at=send.review_due_at,
        review_after=send.review_after,
        approved_by=send.approved_by,
        approved_at=send.approved_at,
        rejected_by=send.rejected_by,
        rejected_at=send.rejected_at,
        review_note=send.review_note,
        cancel_reason=send.cancel_reason,
    )


# Tries a cancel takes to lock its messages' keys in key order (see cancel_send).
CANCEL_TRIES = 3


async def cancel_send(conn: asyncpg.Connection, who: Principal, send_id: int) -> list[int]:
    """Cancel a send that has not gone yet (scheduled, held, or waiting in review): its
    messages, its quota and its dedup keys go back; copies that relied on its messages go out
    in their place. Returns the sends of those heirs (a queued one's batches are enqueued after
    the commit)."""
    send = await visible_send(conn, who, send_id)
    heirs = await close_send(conn, send_id, ["scheduled", "held", "review"], who.actor)
    await oplog.record(conn, who, "send.cancel", tenant_id=send.tenant_id, object=f"send:{send_id}")
    return heirs


async def close_send(
    conn: asyncpg.Connection,
    send_id: int,
    states: list[str],
    actor: str,
    *,
    reason: str | None = None,
    rejected_by: str | None = None,
    note: str | None = None,
) -> list[int]:
    """The one way a send that has not gone is cancelled (its sender's cancel, a reviewer's
    rejection, an expired review): if it is in one of `states`, else 409. Its messages end
    `cancelled`, its whole reservation is released and the keys its messages held pass on;
    returns the sends of the heirs."""

    async def waiting() -> set[int]:
        return {r["id"] for r in await conn.fetch(sql.WAITING, send_id)}

    # The keys its messages hold are locked before its send and its messages are: a send
    # claiming one of them (keys, then the messages it displaces) waits for us, and so does a
    # hand-over (keys, then the sends relying on them), instead of deadlocking. A hand-over we
    # waited for at the send's row may have made heirs of its messages, holding keys we have
    # not locked: then all of it again from a savepoint, every key in key order (the last try
    # takes the new ones as they come: should that deadlock, the answer is a 503 `busy`).
    locking = await waiting()
    for attempt in range(CANCEL_TRIES):
        savepoint = conn.transaction()
        await savepoint.start()
        await dedup.lock_keys(conn, sorted(locking))
        reservation_id = await conn.fetchval(
            sql.CANCEL_SEND, send_id, states, reason, rejected_by, note
        )
        if reservation_id is None:
            await savepoint.rollback()
            raise Conflict(
                f"send {send_id} has already gone to delivery or was cancelled (or decided)"
            )
        now = await waiting()
        if now <= locking or attempt == CANCEL_TRIES - 1:
            await dedup.lock_keys(conn, sorted(now - locking))
            await savepoint.commit()
            break
        await savepoint.rollback()
        locking |= now
    cancelled = [r["id"] for r in await conn.fetch(sql.CANCEL_MESSAGES, send_id)]
    heirs = await dedup.cancel_send(conn, send_id, cancelled)
    if reservation_id:
        await quota.void(conn, reservation_id, actor)
    return heirs


async def release_due(conn: asyncpg.Connection, limit: int | None = None) -> list[int]:
    """Scheduled and held sends whose time has come become queued, up to `limit` of them
    (None: all), earliest first; their ids. Those of a suspended subtree stay where they are
    (park_suspended parks them)."""
    return [r["id"] for r in await conn.fetch(sql.RELEASE_DUE, limit)]


# --- suspension: sends wait ----------------------------------------------------------------
#
# A send whose tenant, or a tenant above it, is suspended waits: once due it is *parked*
# (`parked_at`). Delivery claims nothing of a parked or suspended send, the sweeper neither
# expires nor finishes it, and its reservation never expires meanwhile. When the suspension
# ends it goes on as if it fell due then: queued, its validity and reservation timeout afresh.


async def park_suspended(conn: asyncpg.Connection, limit: int | None = None) -> int:
    """Park the due sends of suspended subtrees, up to `limit` of them (None: all); how many.
    Their reservations stop expiring until they are unparked. (Copies of other sends relying
    on their messages are handed the phone in transactions of their own: `dedup.step_aside`.)"""
    rows = await conn.fetch(sql.PARK_SUSPENDED, limit)
    reservations = [r["reservation_id"] for r in rows if r["reservation_id"] is not None]
    if reservations:
        await quota.set_expiry(conn, reservations, None)
    return len(rows)


async def resumed(
    conn: asyncpg.Connection, after: int = 0, limit: int | None = None
) -> list[sql.ParkedSend]:
    """Parked sends whose suspension has ended, by id: the next `limit` (None: all) after
    `after`."""
    return [
        msgspec.convert(dict(r.items()), sql.ParkedSend)
        for r in await conn.fetch(sql.RESUMED, after, limit)
    ]


async def unpark(
    conn: asyncpg.Connection,
    settings: Settings,
    sends: list[sql.ParkedSend],
    now: datetime | None = None,
) -> list[int]:
    """These parked sends, whose suspension has ended, go on, queued and due now; their ids (to
    enqueue). Normal and bulk ones wait while their tenant's quiet hours hold, as a new send
    would, and go when the hours end."""
    now = now or calendar.now()
    quiet: dict[int, QuietHours] = {}
    ready: list[int] = []
    for send in sends:
        if send.priority != "urgent":
            if send.tenant_id not in quiet:
                tenant = await get_by_id(conn, send.tenant_id)
                assert tenant is not None  # tenants are never deleted
                quiet[send.tenant_id] = (await quiet_hours_for(conn, tenant, settings))[0]
            if held_until(now, quiet[send.tenant_id]) is not None:
                continue
        ready.append(send.id)
    rows = await conn.fetch(sql.UNPARK, ready)
    reservations = [r["reservation_id"] for r in rows if r["reservation_id"] is not None]
    if reservations:
        await quota.set_expiry(conn, reservations, settings.quota.reservation_ttl_seconds)
    return [r["id"] for r in rows]


async def unpark_resumed(
    conn: asyncpg.Connection, settings: Settings, now: datetime | None = None
) -> list[int]:
    """Every parked send whose suspension has ended goes on (see `unpark`); their ids."""
    return await unpark(conn, settings, await resumed(conn), now)


async def recent_sends(conn: asyncpg.Connection, tenant_id: int, limit: int) -> list[SendSummary]:
    """A tenant's own latest sends, newest first, with their messages counted by status."""
    records = await conn.fetch(sql.RECENT_SENDS, tenant_id, limit)
    sends = [msgspec.convert(dict(r.items()), sql.RecentSend) for r in records]
    counts: dict[int, dict[str, int]] = {}
    for r in await conn.fetch(sql.SEND_STATUS_COUNTS, [s.id for s in sends]):
        counts.setdefault(r["send_id"], {})[r["status"]] = r["n"]
    return [
        SendSummary(
            **msgspec.structs.asdict(s), statuses=dict(sorted(counts.get(s.id, {}).items()))
        )
        for s in sends
    ]


async def family(conn: asyncpg.Connection, send: SendRow) -> list[int]:
    """The send's family: the first send and every reminder and resend that follows it."""
    first = send.follows or send.id
    return [first, *(r["id"] for r in await conn.fetch(sql.FAMILY, first))]


async def list_messages(
    conn: asyncpg.Connection,
    who: Principal,
    send_id: int,
    after: int,
    limit: int,
    status: str | None,
    replied: bool | None = None,
) -> MessagePage:
    """A page of a send's messages; with `replied`, only those whose phone did (or did not)
    reply to the send's family. Whether each replied is shown to keys that may read replies."""
    send = await visible_send(conn, who, send_id)
    if replied is not None and not grants(who.scopes, Data.REPLIES):
        raise Forbidden(f"who replied is read with the {scope_for(Data.REPLIES)} scope")
    sends = await family(conn, send) if grants(who.scopes, Data.REPLIES) else None
    records = await conn.fetch(
        sql.MESSAGES_PAGE, send_id, after, limit + 1, status, who.tenant_path, sends, replied
    )
    items = [msgspec.convert(dict(r.items()), MessageView) for r in records[:limit]]
    more = len(records) > limit
    return MessagePage(items=items, next_after=items[-1].id if more and items else None)


# Statuses whose segments went to a carrier: what the archive counts as billed.
WENT = frozenset({"sent", "delivered", "undelivered"})
# How many reply texts the archive keeps per send (their count is always whole).
ARCHIVE_REPLY_TEXTS = 1_000


async def archive_sends(
    conn: asyncpg.Connection,
    settings: Settings,
    tenant_path: str,
    start: datetime,
    end: datetime,
    *,
    subtree: bool = False,
) -> list[ArchivedSend]:
    """The sends of the tenant at `tenant_path` (with `subtree`, of every tenant below it too)
    due in [start, end), as the archive records them, in the order they were due. Cost: the
    segments that went (WENT) at list price, `at_list_price`; the settled share of a closed
    month exists per tenant and carrier only (billing's statement), never per send."""
    records = await conn.fetch(sql.ARCHIVE_SENDS, tenant_path, subtree, start, end)
    sends = [msgspec.convert(dict(r.items()), sql.ArchiveSendRow) for r in records]
    ids = [s.id for s in sends]
    statuses: dict[int, dict[str, int]] = {i: {} for i in ids}
    went: Counter[int] = Counter()
    first_sent: dict[int, datetime] = {}
    last_done: dict[int, datetime] = {}
    for r in await conn.fetch(sql.ARCHIVE_COUNTS, ids):
        send_id = r["send_id"]
        statuses[send_id][r["status"]] = r["n"]
        if r["status"] in WENT:
            went[send_id] += r["segments"]
        if r["first_sent"] is not None:
            first_sent[send_id] = min(first_sent.get(send_id, r["first_sent"]), r["first_sent"])
        if r["last_done"] is not None:
            last_done[send_id] = max(last_done.get(send_id, r["last_done"]), r["last_done"])
    replies = {r["send_id"]: r["n"] for r in await conn.fetch(sql.REPLY_COUNTS, ids)}
    texts: dict[int, list[ArchivedReply]] = {i: [] for i in ids}
    for r in await conn.fetch(sql.REPLY_TEXTS, ids, ARCHIVE_REPLY_TEXTS):
        texts[r["send_id"]].append(ArchivedReply(r["text"], r["opt_out"], r["received_at"]))
    return [
        ArchivedSend(
            id=s.id,
            tenant=s.tenant,
            signature=f"【{s.signature}】",
            body=s.body,
            priority=s.priority,
            state=s.state,
            sender=s.actor,
            approved_by=s.approved_by,
            approved_at=s.approved_at,
            created_at=s.created_at,
            due_at=s.due_at,
            cancelled_at=s.cancelled_at,
            first_sent_at=first_sent.get(s.id),
            last_done_at=last_done.get(s.id),
            recipients=s.recipients,
            statuses=dict(sorted(statuses[s.id].items())),
            went_segments=went[s.id],
            list_price_micros=at_list_price(went[s.id], settings),
            reply_wanted=s.reply_wanted,
            follows=s.follows,
            follow_kind=s.follow_kind,
            replies=replies.get(s.id, 0),
            reply_texts=texts[s.id],
        )
        for s in sends
    ]


async def in_flight(conn: asyncpg.Connection) -> dict[str, int]:
    """The messages of the sends being delivered, by status (sql.IN_FLIGHT_STATUSES)."""
    return {r["status"]: r["n"] for r in await conn.fetch(sql.IN_FLIGHT_STATUSES)}


async def open_sends(conn: asyncpg.Connection) -> dict[str, int]:
    """Sends not finished (scheduled, held, in review, queued), by state."""
    return {r["state"]: r["n"] for r in await conn.fetch(sql.OPEN_SEND_STATES)}
