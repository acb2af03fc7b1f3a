"""Delivery: batches of a send's messages claimed, paced, submitted and recorded; receipts and
replies applied. PostgreSQL holds every message's state; Redis holds only the queue of batch jobs
and the rate buckets, and the sweeper rebuilds the queue from PostgreSQL if Redis loses it.

A batch job, one chunk (the gateway's `chunk`, 100 messages by default) at a time: take the
gateway's rate tokens, claim the chunk's due `accepted` messages under a lease (`sending`), mark
them submitted, call the gateway with no transaction open, and record each outcome in one short
transaction: `sent` with the
gateway's reference (quota used, if the gateway bills on acceptance), `failed` (quota released), or
back to `accepted` with a retry time (or `expired` once the validity period ends).

At most once. A message handed to a gateway whose answer never came may have reached the phone:
sending it again could deliver it twice, so it is closed as `sent` with "outcome unknown" (its
quota used and its segments billable, as if accepted) and never sent again (`close_unknown`).
That happens when the gateway does not answer (an `Unknown` outcome: a timeout, a connection
lost after the write) and when a worker is killed mid-batch (its `sending` rows' lease runs out;
those never handed over go back to the queue). A multi-part message whose later part was
refused is `sent` for the parts that went (`segments_sent`), billed for those, never resent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import msgspec
from arq.connections import ArqRedis

from hub import calendar, queue
from hub.billing import service as billing
from hub.calendar import business_day
from hub.db import Database
from hub.dedup import service as dedup
from hub.delivery import gateways, webhooks
from hub.delivery import inbound as inbound_replies
from hub.delivery import repository as sql
from hub.delivery.gateway import (
    Accepted,
    Failed,
    Gateway,
    Inbound,
    Item,
    Outbound,
    Outcome,
    Receipt,
    Unknown,
    problem,
)
from hub.delivery.pacing import Pacer
from hub.delivery.repository import Claimed, ReceiptTarget, SendInfo
from hub.delivery.routing import Router
from hub.health import tally as tallied
from hub.messages.segments import count_segments, signed
from hub.people import service as people
from hub.quota import service as quota
from hub.settings import DeliverySettings, GatewayConfig, Settings

log = logging.getLogger(__name__)

DELIVER_JOB = "hub.delivery.deliver"
# Lanes: arq serves the lowest score first, so a lane's jobs are scored this far in the past.
# An urgent batch overtakes every normal and bulk one queued less than a day, a normal one every
# bulk one.
LANE_HEAD_START = {"urgent": timedelta(days=2), "normal": timedelta(days=1), "bulk": timedelta(0)}
# A retry's job is put back in its lane this long after its time, so that it never runs before
# its messages are due again (a run that early would find nothing to claim and end).
LANE_MARGIN_SECONDS = 0.05
ACTOR = "system:delivery"
# Sends (and late receipts) the sweeper reads at a time; it reads on until none is left.
SWEEP_BATCH = 200


def gateway_configs(settings: DeliverySettings) -> dict[str, GatewayConfig]:
    return {g.name: g for g in settings.gateways}


def askable(config: GatewayConfig) -> bool:
    """Whether the hub can ask the gateway which messages it took (the outbox: its own table).
    Such a gateway's chunk is marked handed over by its claim, and a dead worker's messages it
    never took go again (EXPIRED_LEASES); any other's, once marked, are never sent again."""
    return config.kind == "outbox"


def lane_score(priority: str) -> datetime:
    """Where a batch of this lane enqueued now stands in arq's queue (lowest served first).
    arq orders its queue by wall-clock scores (its own time.time()), not by the hub's clock."""
    return datetime.now(UTC) - LANE_HEAD_START[priority]


def backoff(attempts: int, settings: DeliverySettings) -> float:
    """Seconds before retry number `attempts`: exponential, capped, with jitter (50 to 100 %)."""
    ceiling = min(settings.retry_cap_seconds, settings.retry_base_seconds * 2.0 ** (attempts - 1))
    jitter: float = random.uniform(0.5, 1.0)
    return ceiling * jitter


# --- enqueueing --------------------------------------------------------------------------


async def enqueue_send(
    db: Database, redis: ArqRedis, settings: DeliverySettings, send_id: int, *, grace: float = 0
) -> int:
    """Enqueue the batch jobs of a committed, queued send; how many were new.

    Job ids name the batch, so enqueueing again (the sweeper) adds nothing while a batch's job is
    queued or running. Messages due within `grace` seconds count as due. Redis failing (or not
    answering within `enqueue_timeout_seconds`) is logged and left to the sweeper: the messages
    are safe in PostgreSQL.
    """
    async with db.acquire() as conn:
        batches = await conn.fetch(sql.BATCHES, send_id, settings.batch_size, grace)
    if not batches:
        return 0
    score_ms = int(lane_score(batches[0]["priority"]).timestamp() * 1000)
    expires_ms = int((settings.validity_seconds + 3600) * 1000)
    jobs = [
        queue.NewJob(
            DELIVER_JOB,
            (send_id, b["carrier"], b["first_id"], b["last_id"]),
            f"deliver:{send_id}:{b['carrier']}:{b['first_id']}:{b['last_id']}",
            score_ms,
            expires_ms,
        )
        for b in batches
    ]
    try:
        async with asyncio.timeout(settings.enqueue_timeout_seconds):
            # One round trip (a script per couple of hundred batches), not three per batch.
            return await queue.enqueue_unique(redis, jobs)
    except (TimeoutError, OSError, ConnectionError) as exc:
        log.warning("send %s: batches not enqueued (%s); the sweeper will", send_id, exc)
        return 0
    except Exception as exc:  # redis-py raises its own hierarchy; log it, never lose the send
        log.warning("send %s: batches not enqueued (%r); the sweeper will", send_id, exc)
        return 0


# --- delivering a batch ------------------------------------------------------------------


def _tell_recorded(gateway: Gateway, chunk: Sequence[Claimed]) -> None:
    """Tell the gateway its chunk's record is committed (`Gateway.recorded`). Nothing it does
    with the word may undo the batch's work: an error is logged, not raised."""
    try:
        gateway.recorded([m.id for m in chunk])
    except Exception:
        log.exception("gateway %s: recorded() failed", gateway.config.name)


async def _forget_texts(conn: asyncpg.Connection, send: SendInfo, chunk: list[Claimed]) -> None:
    """A system send's chunk, recorded: the texts it carried (second-factor codes) are kept
    no longer than needed (sql.FORGET_TEXTS)."""
    if send.system:
        ids = [m.id for m in chunk]
        await conn.execute(sql.FORGET_TEXTS, ids, *sql.bounds(ids))


def _outbound(send: SendInfo, text: str, sender: str, message: Claimed) -> Outbound:
    """A claimed message as the gateway takes it: the send's text, or its own (a personal
    send's, whose encoding is its own too)."""
    encoding = send.encoding
    if message.body is not None:
        text = signed(send.signature, message.body)
        encoding = count_segments(text).encoding
    return Outbound(message.id, message.phone, text, message.segments, encoding, sender)  # type: ignore[arg-type]


class Delivery:
    """One worker process's gateways, router and pacer."""

    def __init__(self, settings: Settings, db: Database, redis: ArqRedis) -> None:
        self.settings, self.config = settings, settings.delivery
        self.db, self.redis = db, redis
        built: dict[str, Gateway] = {
            name: gateways.build(config, db)
            for name, config in gateway_configs(self.config).items()
        }
        self.gateways = built
        self.router = Router(built, self.config, redis)
        self.pacer = Pacer(redis)
        # Gateway calls timed and counted, receipts' lags: added up in Redis for /metrics.
        self.tally = tallied.Tally()
        self.events = Recorder(db, settings, redis, self.tally)
        # Retries waiting to be put back in their lane (see _keep_lane).
        self._lanes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.tally.start_flushing(self.redis)
        for gateway in self.gateways.values():
            try:
                await gateway.start(self.events)
            except Exception:
                # A gateway down at start-up opens its circuit; the others still deliver.
                log.exception("gateway %s did not start", gateway.config.name)
                await self.router.outcome(gateway.config.name, ok=False)

    async def close(self) -> None:
        try:
            for task in self._lanes:
                task.cancel()
            await asyncio.gather(*self._lanes, return_exceptions=True)
            for gateway in self.gateways.values():
                await gateway.close()
        finally:
            # Even when a gateway's close fails: a flusher left running would be destroyed
            # with the event loop in the middle of a Redis call.
            await self.tally.stop_flushing(self.redis)

    async def deliver_batch(self, send_id: int, carrier: str, first_id: int, last_id: int) -> int:
        """Deliver one batch, a chunk at a time; returns how many messages it claimed.

        Each chunk is paced first, then claimed, so a lease covers one gateway call, never a
        wait for rate tokens behind other jobs."""
        async with self.db.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(sql.SEND_INFO, send_id)
            if record is None:
                return 0  # cancelled, held, finished or suspended: nothing of it goes now
            send = msgspec.convert(dict(record.items()), SendInfo)
            expired = await self._expire(conn, send)
        if expired is not None:
            for heir in expired:  # copies that relied on what expired go out instead
                await enqueue_send(self.db, self.redis, self.config, heir)
            return 0
        text = signed(send.signature, send.body)
        sender = self.config.service_number + send.sms_extension
        claimed = 0
        retry_at: datetime | None = None
        heirs: set[int] = set()  # sends whose copies go out in place of one that never did
        while True:
            gateway = await self.router.route(carrier)  # per chunk: a circuit may open mid-batch
            config = gateway.config
            wanted = config.chunk * send.segments_each
            await self.pacer.take(config.name, wanted, config.rate)
            async with self.db.acquire() as conn:
                chunk = [
                    msgspec.convert(dict(r.items()), Claimed)
                    for r in await conn.fetch(
                        sql.CLAIM,
                        send_id,
                        carrier,
                        first_id,
                        last_id,
                        config.name,
                        self.config.lease_seconds,
                        config.chunk,
                        askable(config),
                    )
                ]
            unused = wanted - sum(m.segments for m in chunk)
            if unused:
                await self.pacer.give_back(config.name, unused, config.rate)
            if not chunk:
                await self.router.unused(config.name)
                break
            claimed += len(chunk)
            outbound = [_outbound(send, text, sender, m) for m in chunk]
            outcomes = await self._submit(gateway, outbound, chunk)
            async with self.db.acquire() as conn, conn.transaction():
                retry, handed = await self._record(conn, send, carrier, config, chunk, outcomes)
                await _forget_texts(conn, send, chunk)
            _tell_recorded(gateway, chunk)
            heirs.update(handed)
            if retry is not None:
                retry_at = min(retry_at or retry, retry)
        if retry_at is not None:
            await self._enqueue_retry(send, carrier, first_id, last_id, retry_at)
        for heir in sorted(heirs):  # not due yet (scheduled, held): enqueued when released
            await enqueue_send(self.db, self.redis, self.config, heir)
        return claimed

    async def _submit(
        self, gateway: Gateway, outbound: list[Outbound], chunk: Sequence[Claimed]
    ) -> list[Outcome]:
        """Mark the chunk handed over (only rows this claim still owns), then submit those. (A
        gateway that can be asked what it took had its chunk marked by the claim.)"""
        name = gateway.config.name
        if askable(gateway.config):
            return await self._submit_marked(gateway, outbound)
        async with self.db.acquire() as conn:
            owned = {
                r["id"]
                for r in await conn.fetch(
                    sql.MARK_SUBMITTED,
                    [m.id for m in chunk],
                    [m.attempts for m in chunk],
                    *sql.bounds([m.id for m in chunk]),
                )
            }
        outbound = [m for m in outbound if m.id in owned]
        if not outbound:
            await self.router.unused(name)
            return []
        return await self._submit_marked(gateway, outbound)

    async def _submit_marked(self, gateway: Gateway, outbound: list[Outbound]) -> list[Outcome]:
        """Submit messages marked handed over; what an error means for them."""
        name = gateway.config.name
        try:
            outcomes = await self._call(gateway, outbound)
        except ConnectionError as exc:
            # The adapters' word for "unreachable, nothing handed over": all of them go again.
            log.warning("gateway %s unreachable: %r", name, exc)
            await self.router.outcome(name, ok=False)
            return [
                Failed(m.id, permanent=False, code="unreachable", detail=str(exc)) for m in outbound
            ]
        except Exception as exc:
            # Anything else may have struck with some of them written: at most once.
            log.exception("gateway %s failed mid-call: its messages' outcome is unknown", name)
            await self.router.outcome(name, ok=False)
            return [Unknown(m.id, code="gateway_error", detail=repr(exc)) for m in outbound]
        await self.router.answered(name, outbound, outcomes)
        return outcomes

    async def _call(self, gateway: Gateway, outbound: list[Outbound]) -> list[Outcome]:
        """`gateway.submit`, timed and its outcomes counted for /metrics (`_submit` decides
        what an error means: the counts follow it)."""
        name, started = gateway.config.name, time.monotonic()
        try:
            outcomes = await gateway.submit(outbound)
        except Exception as exc:
            unreachable = isinstance(exc, ConnectionError)
            self.tally.observe(tallied.SUBMIT_SECONDS, time.monotonic() - started, gateway=name)
            reason = "unreachable" if unreachable else "exception"
            self.tally.count(tallied.SUBMIT_ERRORS, gateway=name, reason=reason)
            outcome = "retry" if unreachable else "unknown"
            self.tally.count(tallied.GATEWAY_MESSAGES, len(outbound), gateway=name, outcome=outcome)
            raise
        self.tally.observe(tallied.SUBMIT_SECONDS, time.monotonic() - started, gateway=name)
        for o in outcomes:
            outcome = (
                "accepted"
                if isinstance(o, Accepted)
                else "unknown"
                if isinstance(o, Unknown)
                else "failed"
                if o.permanent
                else "retry"
            )
            self.tally.count(tallied.GATEWAY_MESSAGES, gateway=name, outcome=outcome)
        return outcomes

    def _sort(
        self, send: SendInfo, by_id: dict[int, Claimed], outcomes: Sequence[Outcome]
    ) -> tuple[
        list[Accepted], list[Unknown], list[Failed], list[Failed], list[tuple[Failed, datetime]]
    ]:
        """Sent; outcome unknown; failed for good; expired (no retry fits the validity); to
        retry, and when."""
        answered = {o.message_id for o in outcomes}
        # An adapter that forgot a message: treat it as a transient failure, never as sent.
        outcomes = [
            *outcomes,
            *(Failed(i, permanent=False, code="no_answer") for i in by_id if i not in answered),
        ]
        now = calendar.now()
        deadline = send.due_at + timedelta(seconds=self.config.validity_seconds)
        sent = [o for o in outcomes if isinstance(o, Accepted)]
        unknown = [o for o in outcomes if isinstance(o, Unknown)]
        failed: list[Failed] = []
        expired: list[Failed] = []
        retries: list[tuple[Failed, datetime]] = []
        for o in outcomes:
            if isinstance(o, Failed):
                if o.permanent:
                    failed.append(o)
                else:
                    at = now + timedelta(seconds=backoff(by_id[o.message_id].attempts, self.config))
                    (expired.append(o) if at >= deadline else retries.append((o, at)))
        return sent, unknown, failed, expired, retries

    async def _record(
        self,
        conn: asyncpg.Connection,
        send: SendInfo,
        carrier: str,
        gateway: GatewayConfig,
        chunk: Sequence[Claimed],
        outcomes: Sequence[Outcome],
    ) -> tuple[datetime | None, list[int]]:
        """Record a chunk's outcomes and settle its quota; returns the earliest retry time and
        the sends whose copies go out in place of messages that failed or expired here.

        Layer 3 of dedup follows what went out (`dedup.follow`): copies that relied on a message
        a receipt (one that beat our record of `sent`) says was delivered are settled with it,
        and those that relied on one that failed, expired or was undelivered get their notice
        from the first of them due. A message `sent`, or closed as "outcome unknown", keeps its
        copies relying until its receipt says whether it arrived (or none came in time:
        `settle_decided`)."""
        by_id = {m.id: m for m in chunk}
        sent, unknown, failed, expired, retries = self._sort(send, by_id, outcomes)
        used = released = 0
        early: list[ReceiptTarget] = []  # receipts that came before this record of `sent`
        missed: list[int] = []  # never went: their copies go out instead
        if sent:
            used, released, early = await self._record_sent(conn, gateway, by_id, sent)
            if used:  # billable from now on
                today = business_day()
                billable = {(send.tenant_id, carrier, today): used}
                await billing.record_usage(conn, "billable", billable)
        if unknown:  # billable as sent, on the day handed over: today
            today = business_day()
            maybe = []
            for o in unknown:
                m, why = by_id[o.message_id], f"{o.code}: {o.detail}" if o.detail else o.code
                maybe.append(
                    MaybeSent(
                        o.message_id,
                        m.attempts,
                        send.tenant_id,
                        carrier,
                        today,
                        m.segments,
                        why,
                        o.parts,
                    )
                )
            maybe_used, maybe_released = await close_unknown(conn, maybe)
            used, released = used + maybe_used, released + maybe_released
        for status, group in (("failed", failed), ("expired", expired)):
            if group:
                ids = [o.message_id for o in group]
                rows = await conn.fetch(
                    sql.RECORD_FINAL,
                    ids,
                    status,
                    [f"{o.code}: {o.detail}" if o.detail else o.code for o in group],
                    [by_id[o.message_id].attempts for o in group],
                    *sql.bounds(ids),
                )
                released += sum(by_id[r["id"]].segments for r in rows)
                missed += [r["id"] for r in rows]
        if retries:
            ids = [o.message_id for o, _ in retries]
            await conn.execute(
                sql.RECORD_RETRY,
                ids,
                [at for _, at in retries],
                [o.code for o, _ in retries],
                [by_id[o.message_id].attempts for o, _ in retries],
                *sql.bounds(ids),
            )
        own = {send.reservation_id: (used, released)} if send.reservation_id is not None else {}
        # What went to a gateway billing on delivery waits in the reservation for its receipts.
        extend: dict[int, float] = {}
        if sent and gateway.bills_on == "delivered" and send.reservation_id is not None:
            extend[send.reservation_id] = gateway.receipt_window_seconds
        heirs = await settle_outcomes(
            conn, {gateway.name: gateway}, early, [], missed, own, extend=extend
        )
        return min((at for _, at in retries), default=None), heirs

    async def _record_sent(
        self,
        conn: asyncpg.Connection,
        gateway: GatewayConfig,
        by_id: dict[int, Claimed],
        sent: Sequence[Accepted],
    ) -> tuple[int, int, list[ReceiptTarget]]:
        """Record what the gateway took; the segments to use (if it bills on acceptance) and to
        release (the parts of a message that went in part that never went), and the receipts
        that beat this record (an SMPP receipt can), now matched."""
        # A receipt for one of these that found no message waits for this commit, or is
        # already kept as unmatched and taken below (see apply_receipts).
        await conn.fetchval(sql.LOCK_REFERENCES, gateway.name, [o.reference for o in sent])
        parts = {o.message_id: parts_sent(o.parts, by_id[o.message_id].segments) for o in sent}
        ids = [o.message_id for o in sent]
        rows = await conn.fetch(
            sql.RECORD_SENT,
            ids,
            [o.reference for o in sent],
            [by_id[o.message_id].attempts for o in sent],
            [o.detail for o in sent],
            [parts[o.message_id] for o in sent],
            *sql.bounds(ids),
        )
        used = released = 0
        for r in rows:
            segments = by_id[r["id"]].segments
            went = parts[r["id"]] or segments
            released += segments - went
            used += went if gateway.bills_on == "accepted" else 0
        recorded = [r["id"] for r in rows]
        early = await conn.fetch(sql.TAKE_UNMATCHED, gateway.name, recorded, *sql.bounds(recorded))
        receipts = [Receipt(r["reference"], r["status"], r["code"]) for r in early]
        return used, released, (await match_receipts(conn, gateway, receipts))[0]

    async def _expire(self, conn: asyncpg.Connection, send: SendInfo) -> list[int] | None:
        """Expire a send's waiting messages once its validity period is over; None while it
        lasts, else the sends whose copies go out in place of those expired."""
        if send.due_at + timedelta(seconds=self.config.validity_seconds) > calendar.now():
            return None
        expired, segments = await expire_waiting(conn, send.id, self.config)
        own = {send.reservation_id: (0, segments)} if send.reservation_id is not None else {}
        return await settle_outcomes(conn, {}, [], [], expired, own)

    async def _enqueue_retry(
        self, send: SendInfo, carrier: str, first_id: int, last_id: int, at: datetime
    ) -> None:
        job_id = f"deliver:{send.id}:{carrier}:{first_id}:{last_id}:{at.timestamp():.3f}"
        wait = max(at - calendar.now(), timedelta(0))  # arq's clock is the wall's
        try:
            job = await self.redis.enqueue_job(
                DELIVER_JOB,
                send.id,
                carrier,
                first_id,
                last_id,
                _job_id=job_id,
                _defer_by=wait,
                _expires=timedelta(seconds=self.config.validity_seconds + 3600),
            )
        except Exception as exc:  # the sweeper finds the messages when they fall due
            log.warning("send %s: retry not enqueued (%r); the sweeper will", send.id, exc)
            return
        if job is not None and LANE_HEAD_START[send.priority]:
            self._keep_lane(job_id, send.priority, wait)

    def _keep_lane(self, job_id: str, priority: str, wait: timedelta) -> None:
        """Put a deferred retry back in its lane once it is due.

        A deferred job's score is its time, so when it falls due it stands behind every batch
        enqueued before then — an urgent retry behind a whole bulk send. Once due, its score is
        set to its lane's (the member it already is, if still queued), and it overtakes them
        again. Should this worker stop first, the job still runs at its time, and the sweeper
        enqueues what is due in its lane.
        """

        async def rescore() -> None:
            await asyncio.sleep(wait.total_seconds() + LANE_MARGIN_SECONDS)
            score = lane_score(priority).timestamp() * 1000  # arq scores in milliseconds
            try:
                await self.redis.zadd(self.redis.default_queue_name, {job_id: score}, xx=True)
            except Exception as exc:  # it runs at its own time, only not ahead of the rest
                log.warning("retry %s not put back in its lane (%r)", job_id, exc)

        task = asyncio.create_task(rescore())
        self._lanes.add(task)
        task.add_done_callback(self._lanes.discard)


def parts_sent(parts: int, segments: int) -> int:
    """What `segments_sent` records for a message of `segments` of which `parts` went (0: all,
    as a gateway that cut it into more parts than the hub counts may say)."""
    return parts if 0 < parts < segments else 0


class MaybeSent(msgspec.Struct, frozen=True):
    """A message handed to a gateway whose answer never came."""

    id: int
    attempts: int  # the claim's: only its own row is closed
    tenant_id: int
    carrier: str
    day: date  # the business day it was handed over: its usage counts on it
    segments: int
    why: str
    parts: int = 0  # the parts that may have gone, when fewer than its segments (0: all)


async def close_unknown(conn: asyncpg.Connection, messages: Sequence[MaybeSent]) -> tuple[int, int]:
    """Close messages handed to a gateway that never answered (a timeout, a connection lost
    after the write, a worker that died): `sent` with "outcome unknown", never sent again. What
    may have gone is billable on the day it was handed over, as if accepted. Returns the
    segments to use and to release on the send's reservation (the caller settles it)."""
    rows = await conn.fetch(
        sql.CLOSE_UNKNOWN,
        [m.id for m in messages],
        [m.attempts for m in messages],
        [m.why for m in messages],
        [parts_sent(m.parts, m.segments) for m in messages],
        *sql.bounds([m.id for m in messages]),
    )
    closed = {r["id"] for r in rows}
    maybe_sent: dict[billing.UsageKey, int] = defaultdict(int)
    used = released = 0
    for m in messages:
        if m.id in closed:
            went = parts_sent(m.parts, m.segments) or m.segments
            maybe_sent[m.tenant_id, m.carrier, m.day] += went
            used, released = used + went, released + m.segments - went
    await billing.record_usage(conn, "billable", maybe_sent)
    return used, released


async def expire_waiting(
    conn: asyncpg.Connection, send_id: int, config: DeliverySettings
) -> tuple[list[int], int]:
    """Expire a send's waiting messages past their validity: which, and their segments (to
    release from its reservation, with `settle_outcomes`, which also hands their copies on)."""
    rows = await conn.fetch(sql.EXPIRE_MESSAGES, send_id, config.validity_seconds)
    return [r["id"] for r in rows], sum(r["segments"] for r in rows)


async def settle_outcomes(
    conn: asyncpg.Connection,
    configs: dict[str, GatewayConfig],
    receipts: Sequence[ReceiptTarget],
    reached: Sequence[int],
    missed: Sequence[int],
    own: dict[int, tuple[int, int]],
    *,
    presumed: Sequence[int] = (),
    due_before: datetime | None = None,
    extend: Mapping[int, float] | None = None,
) -> list[int]:
    """The last steps of every transaction that records what became of messages; returns the
    sends whose copies now go out in place of messages that missed the phone (to enqueue after
    the commit).

    Matched `receipts` count as delivered or undelivered, and on a gateway that bills on
    delivery use or release their segments. Copies relying on messages that `reached` the phone
    (or were delivered) are settled, those relying on ones `presumed` to have reached it only
    when due before `due_before`, those relying on ones that `missed` it (or were undelivered)
    handed over (`dedup.follow`: their keys locked first, in key order). Then every
    reservation touched is settled in one call with the caller's `own` parts (and those to
    `extend`, see `quota.settle_parts`): quota rows are the last locks a transaction takes."""
    parts = dict(own)
    if receipts:
        billable, on_delivery = await _settle_on_delivery(conn, configs, receipts)
        await billing.record_usages(conn, {**_outcomes(receipts), "billable": billable})
        parts = dedup.merge_parts(parts, on_delivery)
        reached = [*reached, *(r.id for r in receipts if r.status == "delivered")]
        missed = [*missed, *(r.id for r in receipts if r.status != "delivered")]
    followed = await dedup.follow(conn, reached, missed, presumed=presumed, due_before=due_before)
    if followed.saved:
        await billing.record_usage(conn, "dedup", followed.saved)
    parts = dedup.merge_parts(parts, followed.released)
    if extend or any(u or r for u, r in parts.values()):
        await quota.settle_parts(conn, parts, ACTOR, extend=extend)
    return followed.heirs


# --- receipts and replies ----------------------------------------------------------------


async def purge_unmatched(conn: asyncpg.Connection, config: DeliverySettings, batch: int) -> int:
    """One batch of receipts that waited longer than a validity period for their message
    deleted; how many."""
    status = await conn.execute(sql.PURGE_UNMATCHED, batch, config.validity_seconds)
    return int(status.split()[-1])


async def purge_reply_waits(conn: asyncpg.Connection, config: DeliverySettings, batch: int) -> int:
    """One batch of reply waits that can no longer link a reply deleted; how many."""
    status = await conn.execute(sql.PURGE_REPLY_WAITS, batch, config.reply_window_seconds)
    return int(status.split()[-1])


class Applied(NamedTuple):
    applied: int
    unmatched: int
    heirs: list[int]  # sends whose copies go out in place of undelivered messages


async def apply_receipts(
    conn: asyncpg.Connection,
    gateway: GatewayConfig,
    receipts: Sequence[Receipt],
    *,
    seen: list[ReceiptTarget] | None = None,
) -> Applied:
    """Move messages to delivered/undelivered (see `match_receipts`) and settle what follows
    (`settle_outcomes`): the copies relying on a delivered message are settled, those relying
    on an undelivered one get their notice from the first of them due. The messages moved are
    added to `seen` when given (their receipt lags, for /metrics once committed)."""
    rows, unmatched = await match_receipts(conn, gateway, receipts)
    if seen is not None:
        seen.extend(rows)
    heirs = await settle_outcomes(conn, {gateway.name: gateway}, rows, [], [], {})
    return Applied(len(rows), unmatched, heirs)


async def match_receipts(
    conn: asyncpg.Connection, gateway: GatewayConfig, receipts: Sequence[Receipt]
) -> tuple[list[ReceiptTarget], int]:
    """Move messages to delivered/undelivered; returns those moved, and how many receipts
    matched none (the caller settles what follows, with `settle_outcomes`).

    A receipt is for the newest message of the gateway holding its reference, and only if that
    one was sent within the gateway's `receipt_window_seconds`: a reused gateway id never
    reaches an older message. Forward only: a receipt for a message already final changes
    nothing (a repeat). One whose reference no message in the window holds is kept in
    `unmatched_receipts` (counted, and applied if the message's `sent` is recorded later) and
    logged, never an error.
    """
    if not receipts:
        return [], 0
    latest = {r.reference: r for r in receipts}  # one receipt per reference per call

    async def apply(refs: list[str]) -> list[ReceiptTarget]:
        return [
            msgspec.convert(dict(r.items()), ReceiptTarget)
            for r in await conn.fetch(
                sql.APPLY_RECEIPTS,
                gateway.name,
                refs,
                [latest[r].status for r in refs],
                [latest[r].code for r in refs],
                gateway.receipt_window_seconds,
            )
        ]

    rows = await apply(list(latest))
    moved = {row.reference for row in rows}  # once, not once per receipt (it was quadratic)
    rest = [r for r in latest if r not in moved]
    unknown: list[str] = []
    if rest:
        # A worker may be recording these as `sent` right now: its locks make us wait for its
        # commit, and the second try sees it. Had we locked first, it takes what we keep.
        await conn.fetchval(sql.LOCK_REFERENCES, gateway.name, rest)
        again = await apply(rest)
        rows += again
        moved = {row.reference for row in again}
        rest = [r for r in rest if r not in moved]
    if rest:
        window = gateway.receipt_window_seconds
        known = {
            r["reference"]
            for r in await conn.fetch(sql.KNOWN_REFERENCES, gateway.name, rest, window)
        }
        unknown = [r for r in rest if r not in known]
    if unknown:
        await conn.execute(
            sql.KEEP_UNMATCHED,
            gateway.name,
            unknown,
            [latest[r].status for r in unknown],
            [latest[r].code for r in unknown],
        )
        log.warning("gateway %s: %d receipts for unknown references", gateway.name, len(unknown))
    return rows, len(unknown)


Usage = dict[billing.UsageKind, dict[billing.UsageKey, int]]


def _outcomes(rows: Sequence[ReceiptTarget]) -> Usage:
    """Delivered and undelivered segments per tenant and carrier: the delivery rate."""
    outcomes: Usage = {
        "delivered": defaultdict(int),
        "undelivered": defaultdict(int),
    }
    for r in rows:
        outcomes["delivered" if r.status == "delivered" else "undelivered"][
            r.tenant_id, r.carrier, r.day
        ] += r.segments
    return outcomes


async def _settle_on_delivery(
    conn: asyncpg.Connection, configs: dict[str, GatewayConfig], rows: Sequence[ReceiptTarget]
) -> tuple[dict[billing.UsageKey, int], dict[int, tuple[int, int]]]:
    """Where the gateway bills on delivery: the delivered segments that become billable, and
    the parts of the sends' reservations to settle (delivered used, undelivered released). Not
    a message closed as "outcome unknown" before its receipt came: that counted as used then."""
    per_send: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    billable: dict[billing.UsageKey, int] = defaultdict(int)
    for r in rows:
        config = configs.get(r.gateway)
        if r.counted or config is None or config.bills_on != "delivered":
            continue
        per_send[r.send_id][0 if r.status == "delivered" else 1] += r.segments
        if r.status == "delivered":
            billable[r.tenant_id, r.carrier, r.day] += r.segments
    if not per_send:
        return {}, {}
    reservations = {
        r["id"]: r["reservation_id"]
        for r in await conn.fetch(sql.SEND_RESERVATIONS, list(per_send))
    }
    return billable, {
        reservations[s]: (u, f) for s, (u, f) in per_send.items() if reservations.get(s) is not None
    }


async def apply_late_receipts(
    conn: asyncpg.Connection, settings: DeliverySettings, batch: int = SWEEP_BATCH
) -> Applied:
    """Receipts that arrived before their message's `sent` was committed (kept as unmatched)
    are applied once it is, up to `batch` of them: how many were taken (`unmatched`: kept
    again), applied, and the heirs of undelivered messages."""
    configs = gateway_configs(settings)
    names = list(configs)
    windows = [configs[n].receipt_window_seconds for n in names]
    late: dict[str, list[Receipt]] = defaultdict(list)
    taken = await conn.fetch(sql.TAKE_NOW_MATCHED, batch, names, windows)
    for r in taken:
        late[r["gateway"]].append(Receipt(r["reference"], r["status"], r["code"]))
    rows: list[ReceiptTarget] = []
    kept = 0
    for name, receipts in late.items():
        matched, unmatched = await match_receipts(conn, configs[name], receipts)
        rows, kept = rows + matched, kept + unmatched
    heirs = await settle_outcomes(conn, configs, rows, [], [], {})
    return Applied(len(rows), kept, heirs)


async def settle_decided(
    conn: asyncpg.Connection, settings: DeliverySettings, after: int, batch: int = SWEEP_BATCH
) -> tuple[int | None, int, list[int]]:
    """One page of the net under `settle_outcomes`: of the originals after id `after` that copies
    still rely on (up to `batch`, walked on the partial index of relying copies), those whose
    outcome is known have their copies settled or handed over. An original still `sent` (or
    closed as "outcome unknown") whose receipt has not come within its gateway's receipt window
    counts as delivered. Once the validity period is over (if it ends first) it is presumed
    delivered: its copies that could not go out themselves any more (due a validity period ago)
    are settled, and a copy due later keeps relying until the receipt comes or its own validity
    is over (an `undelivered` receipt then hands it the phone). Returns the page's last original
    (None: the walk is over), how many were decided, and the heirs' sends."""
    configs = gateway_configs(settings)
    names = list(configs)
    windows = [configs[n].receipt_window_seconds for n in names]
    waits = [min(w, settings.validity_seconds) for w in windows]
    page = await conn.fetch(
        sql.ORIGINALS_DECIDED, names, waits, settings.validity_seconds, after, batch, windows
    )
    decided = [r for r in page if r["decided"]]
    reached = [r["id"] for r in decided if r["reached"] and not r["presumed"]]
    presumed = [r["id"] for r in decided if r["presumed"]]
    missed = [r["id"] for r in decided if not r["reached"]]
    heirs = await settle_outcomes(
        conn,
        configs,
        [],
        reached,
        missed,
        {},
        presumed=presumed,
        due_before=calendar.now() - timedelta(seconds=settings.validity_seconds),
    )
    last = page[-1]["id"] if len(page) == batch else None
    return last, len(decided), heirs


class Recorder:
    """The `Events` sink: what gateways push is recorded in PostgreSQL. An item that cannot be
    stored (`gateway.problem`) is logged and left out, never allowed to fail the others: an
    adapter retries a batch that fails (SMPP's receipts are acknowledged already), so one NUL in
    one reply would otherwise hold back every receipt and reply after it."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        redis: ArqRedis,
        tally: tallied.Tally | None = None,
    ) -> None:
        self.db, self.settings, self.redis = db, settings, redis
        self.configs = gateway_configs(settings.delivery)
        self.tally = tally  # where receipts' lags are counted (for /metrics), if anywhere

    async def receipts(self, gateway: str, receipts: Sequence[Receipt]) -> None:
        storable = _storable(gateway, "receipt", receipts)
        seen: list[ReceiptTarget] = []
        async with self.db.acquire() as conn, conn.transaction():
            erased = await people.quoting_erased(
                conn, self.settings.people, (r.reference for r in storable)
            )
            if erased:  # late receipts for messages to an erased phone: nothing to keep
                storable = [r for r in storable if r.reference not in erased]
                log.info("gateway %s: %d receipts quote an erased phone", gateway, len(erased))
            applied = await apply_receipts(conn, self.configs[gateway], storable, seen=seen)
        if self.tally is not None:
            for row in seen:
                self.tally.observe(tallied.RECEIPT_LAG, max(row.lag_seconds, 0.0), gateway=gateway)
        for heir in applied.heirs:  # copies that relied on an undelivered message go out
            await enqueue_send(self.db, self.redis, self.settings.delivery, heir)

    async def inbound(self, gateway: str, replies: Sequence[Inbound]) -> None:
        storable = _storable(gateway, "reply", replies)
        async with self.db.acquire() as conn, conn.transaction():
            stored = await inbound_replies.store(conn, self.settings.delivery, gateway, storable)
        await webhooks.wake(self.redis, stored)


def _storable(gateway: str, kind: str, items: Sequence[Item]) -> list[Item]:
    """The items that can be stored; each other one is logged with its place and the reason."""
    kept: list[Item] = []
    for index, item in enumerate(items):
        reason = problem(item)
        if reason is None:
            kept.append(item)
        else:
            log.warning(
                "gateway %s: %s %d of %d refused: %r", gateway, kind, index, len(items), reason
            )
    return kept


# --- the sweeper -------------------------------------------------------------------------


async def sweep(
    db: Database, redis: ArqRedis, settings: DeliverySettings, batch: int = SWEEP_BATCH
) -> dict[str, Any]:
    """Recover what a lost job or a dead worker left: late receipts applied; per queued send,
    expired leases back to the queue (or closed as outcome unknown), waiting messages past
    validity expired, due messages re-enqueued, and the send marked done once nothing of it is
    open.

    Every queued send, however many: they are read `batch` at a time by a keyset cursor over
    (priority, id), urgent first, and each send is a transaction of its own whose quota
    settlement comes at its end, so a tenant's quota rows are held for a few short statements."""
    report = dict.fromkeys(
        ("late_receipts", "sends", "requeued", "unknown", "expired", "done", "enqueued"), 0
    )
    heirs: set[int] = set()  # sends whose copies go out in place of messages that missed
    while True:  # a batch to a transaction
        async with db.acquire() as conn, conn.transaction():
            late = await apply_late_receipts(conn, settings, batch)
        report["late_receipts"] += late.applied
        heirs.update(late.heirs)
        # Taken ones are matched within their window; should none apply (a race with another
        # sweep), going on could take the same ones again.
        if late.applied + late.unmatched < batch or not late.applied:
            break
    after = sql.OpenSend(id=0, priority="urgent")  # before every queued send
    while True:
        async with db.acquire() as conn:
            page = [
                msgspec.convert(dict(r.items()), sql.OpenSend)
                for r in await conn.fetch(sql.OPEN_SENDS, after.priority, after.id, batch)
            ]
        for send in page:
            report["sends"] += 1
            await _sweep_send(db, redis, settings, send.id, report, heirs)
        if len(page) < batch:
            break
        after = page[-1]
    for heir in sorted(heirs):  # enqueueing twice adds nothing (job ids name the batch)
        report["enqueued"] += await enqueue_send(db, redis, settings, heir)
    return report


async def _sweep_send(
    db: Database,
    redis: ArqRedis,
    settings: DeliverySettings,
    send_id: int,
    report: dict[str, int],
    heirs: set[int],
) -> None:
    """One queued send's round of the sweeper (see `sweep`), in a transaction of its own; the
    sends whose copies go out in place of messages it expired are added to `heirs`."""
    async with db.acquire() as conn, conn.transaction():
        reservation_id = await conn.fetchval(sql.SEND_RESERVATION, send_id)
        outboxes = [g.name for g in settings.gateways if askable(g)]
        leases = await conn.fetch(sql.EXPIRED_LEASES, send_id, outboxes)
        unknown = [r for r in leases if r["unknown"]]
        report["requeued"] += len(leases) - len(unknown)
        used = released = 0
        if unknown:
            report["unknown"] += len(unknown)
            why = "its worker stopped while the gateway had it"
            used, released = await close_unknown(
                conn,
                [
                    MaybeSent(
                        r["id"],
                        r["attempts"],
                        r["tenant_id"],
                        r["carrier"],
                        r["day"],
                        r["segments"],
                        why,
                    )
                    for r in unknown
                ],
            )
        expired, segments = await expire_waiting(conn, send_id, settings)
        report["expired"] += len(expired)
        own = {reservation_id: (used, released + segments)} if reservation_id is not None else {}
        # Copies relying on those closed unknown wait for their receipt (the gateway may be
        # asked); those relying on the expired ones go out instead.
        heirs.update(await settle_outcomes(conn, {}, [], [], expired, own))
        counts = await conn.fetchrow(sql.OPEN_MESSAGES, send_id)
        assert counts is not None
        if counts["open"] == 0:
            await conn.execute(sql.FINISH_SEND, send_id)
            report["done"] += 1
    if counts["open"] and counts["due"]:
        report["enqueued"] += await enqueue_send(db, redis, settings, send_id)


async def decide(db: Database, redis: ArqRedis, settings: DeliverySettings) -> dict[str, int]:
    """Walk every original that copies still rely on, a page per transaction (`settle_decided`),
    and enqueue the heirs it hands phones to; counts for the log."""
    report = {"decided": 0, "enqueued": 0}
    heirs: set[int] = set()
    after: int | None = 0
    while after is not None:
        async with db.acquire() as conn, conn.transaction():
            after, decided, handed = await settle_decided(conn, settings, after)
        report["decided"] += decided
        heirs.update(handed)
    for heir in sorted(heirs):
        report["enqueued"] += await enqueue_send(db, redis, settings, heir)
    return report


# --- what operators watch (/metrics) -----------------------------------------------------

LANES = tuple(LANE_HEAD_START)
# Jobs in arq's queue that are not batches of a send (webhook pushes, crons).
OTHER_LANE = "other"


async def queue_by_lane(db: Database, redis: ArqRedis) -> dict[str, int]:
    """The jobs waiting in arq's queue, per lane: a batch job's id names its send
    (`enqueue_send`), whose priority is its lane; a batch whose send is gone counts as `other`
    with the jobs that are no batches. Due and deferred (a retry's) alike."""
    members = await redis.zrange(redis.default_queue_name, 0, -1)
    per_send: dict[int, int] = defaultdict(int)
    counts = dict.fromkeys((*LANES, OTHER_LANE), 0)
    for member in members:
        job_id = member.decode() if isinstance(member, bytes) else str(member)
        kind, _, rest = job_id.partition(":")
        send = rest.partition(":")[0]
        if kind == "deliver" and send.isdigit():
            per_send[int(send)] += 1
        else:
            counts[OTHER_LANE] += 1
    if per_send:
        async with db.acquire() as conn:
            lanes = {
                r["id"]: r["priority"] for r in await conn.fetch(sql.SEND_LANES, list(per_send))
            }
        for send_id, jobs in per_send.items():
            counts[lanes.get(send_id, OTHER_LANE)] += jobs
    return counts


async def oldest_due_age(conn: asyncpg.Connection) -> float:
    """Seconds the oldest message due and not yet handed to a gateway has waited (0: none)."""
    age: float = await conn.fetchval(sql.OLDEST_DUE_AGE)
    return max(age, 0.0)
