"""Webhook pushes: each reply stored for a tenant with a webhook is POSTed to its URL, signed.

`inbound.store` queues a `webhook_deliveries` row per reply. The job `hub.delivery.webhooks`
(a cron every 10 s, and enqueued right after replies are committed) claims due rows under a lease
(`next_at` moves past the call, so no transaction stays open during it and a dead worker's rows
come back), POSTs each and records the answer in a short transaction of its own:

- a 2xx: `delivered_at` is set; the row never goes again;
- anything else (another status; redirects are not followed), no answer within 10 s, no
  connection: `attempts` + 1, `last_error`, and `next_at` = now + 10 s * 2^(attempts - 1),
  capped at an hour, jittered to 50 to 100 %. After `MAX_ATTEMPTS` (12) attempts, 1.7 to 3.4
  hours after the first, it gives up: `next_at` becomes 'infinity' and the row stays with its
  `last_error`.

Each attempt reads the tenant's URL and secret afresh: a webhook set again applies to retries.

Only public addresses are called (unless `HUB_DELIVERY__WEBHOOKS_PRIVATE_OK`): the client's
transport resolves the host of every request and refuses one that is, or resolves to, a private,
loopback, link-local or otherwise non-global address — a failed attempt like any other, with the
reason in `last_error`. Setting a webhook refuses such a literal address at once (422). A name
that resolves differently between the check and the connection (DNS rebinding) is not caught.

`attempts` counts every POST, the successful one too. A push may arrive more than once (a worker
dying between the call and its record, a lease running out): receivers dedupe on
`X-Hub-Delivery`, the same for every attempt at one reply.

The request: `POST <url>` with `Content-Type: application/json`, the body an `InboundView`
(`{"id", "tenant", "phone", "address", "text", "opt_out", "gateway", "received_at"}`), and

    X-Hub-Delivery:  <delivery id>
    X-Hub-Timestamp: <unix seconds when this attempt was sent>
    X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

How a tenant verifies one (`verify` does exactly this; `sign` is the recipe): take the raw body
bytes as received (before any JSON parsing), recompute `sign(secret, timestamp_header, body)`,
compare it with `X-Hub-Signature` in constant time (`hmac.compare_digest`), and reject a
timestamp more than 5 minutes from its own clock, so a captured request cannot be replayed
later. Then answer 2xx quickly; anything else is retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import math
import random
import socket
import time
from collections.abc import Sequence

import httpx
import msgspec
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from hub.db import Database
from hub.delivery import repository as sql
from hub.delivery.repository import DueWebhook
from hub.delivery.schemas import InboundView

log = logging.getLogger(__name__)

WEBHOOK_JOB = "hub.delivery.webhooks"
BATCH = 100  # pushes claimed at once
CONCURRENCY = 10  # of them in flight at once
TIMEOUT = 10.0  # seconds for one POST, all told
MAX_ATTEMPTS = 12
BACKOFF_BASE = 10.0  # seconds before the second attempt; doubled each time
BACKOFF_CAP = 3600.0
TOLERANCE = 300  # seconds a receiver should accept a timestamp off its clock
ERROR_CHARS = 300  # of an answer or exception kept in last_error

_encoder = msgspec.json.Encoder()


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """`X-Hub-Signature` for a body sent at `timestamp`: `sha256=` + hex HMAC-SHA256 of
    `<timestamp>.<body>` keyed with the webhook's secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> bool:
    """A receiver's check: the signature matches (constant-time) and the timestamp is within
    `tolerance` seconds of `now` (default: the clock)."""
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def retry_delay(attempts: int) -> float:
    """Seconds before trying again after `attempts` failed ones: doubling, capped, jittered."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempts - 1))
    jitter: float = random.uniform(0.5, 1.0)
    return ceiling * jitter


def client(*, private_ok: bool = False) -> httpx.AsyncClient:
    """The HTTP client pushes go through (one per worker): to public addresses only, unless
    `private_ok`."""
    transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
    if not private_ok:
        transport = PublicOnly(transport)
    return httpx.AsyncClient(
        timeout=TIMEOUT, headers={"User-Agent": "sms-hub-webhooks/1"}, transport=transport
    )


def not_public(address: str) -> bool:
    """True for an address a webhook must not reach: private, loopback, link-local, reserved…"""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone is not part of it
    return not ip.is_global


def literal_problem(url: str) -> str | None:
    """Why a webhook URL is refused without a lookup (a non-public literal address, localhost),
    or None."""
    host = httpx.URL(url).host
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine, not a public address"
    try:
        refused = not_public(host)
    except ValueError:
        return None  # a name: resolved and checked when it is called
    return f"{host} is not a public address" if refused else None


class PublicOnly(httpx.AsyncBaseTransport):
    """Refuses a request whose host is, or resolves to, a non-public address."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}", request=request) from exc
        for *_, address in found:
            if not_public(str(address[0])):
                raise httpx.ConnectError(
                    f"{host} is {address[0]}, not a public address (webhooks call the public "
                    "internet only)",
                    request=request,
                )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def wake(redis: ArqRedis, inbound_ids: Sequence[int]) -> None:
    """After replies are committed: enqueue one push job now rather than wait for the cron. Its
    id names the newest reply, so a job already running does not swallow this one. Redis failing
    is only logged: the rows are in PostgreSQL and the cron pushes them within 10 s."""
    if not inbound_ids:
        return
    try:
        await redis.enqueue_job(WEBHOOK_JOB, _job_id=f"{WEBHOOK_JOB}:{max(inbound_ids)}")
    except (RedisError, OSError) as exc:
        log.warning("webhook push not enqueued (%r); the cron will push", exc)


async def push_due(db: Database, client: httpx.AsyncClient, limit: int = BATCH) -> int:
    """Claim up to `limit` due pushes, POST them (`CONCURRENCY` at a time) and record each
    answer; how many were tried."""
    # Long enough for every round of CONCURRENCY calls to time out, and one more.
    lease = TIMEOUT * (math.ceil(limit / CONCURRENCY) + 1)
    async with db.acquire() as conn:
        records = await conn.fetch(sql.CLAIM_WEBHOOKS, limit, lease)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def push_one(row: dict[str, object]) -> None:
        due = msgspec.convert(row, DueWebhook)
        body = _encoder.encode(msgspec.convert(row, InboundView))
        async with gate:
            error = await _post(client, due, body)
        async with db.acquire() as conn:
            if error is None:
                await conn.execute(sql.WEBHOOK_DELIVERED, due.delivery_id)
            else:
                delay = retry_delay(due.attempts + 1)
                await conn.execute(
                    sql.WEBHOOK_FAILED, due.delivery_id, error, delay, MAX_ATTEMPTS, due.attempts
                )
                log.info("webhook push %s failed: %s", due.delivery_id, error)

    async with asyncio.TaskGroup() as group:
        for record in records:
            group.create_task(push_one(dict(record.items())))
    return len(records)


async def _post(client: httpx.AsyncClient, due: DueWebhook, body: bytes) -> str | None:
    """POST one push; None if the endpoint took it (2xx), else why not."""
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Delivery": str(due.delivery_id),
        "X-Hub-Timestamp": str(timestamp),
        "X-Hub-Signature": sign(due.secret, timestamp, body),
    }
    try:
        # TIMEOUT for the whole call, not per phase: the lease counts on it. Streamed: only the
        # start of a failing answer is read, however long it is.
        async with (
            asyncio.timeout(TIMEOUT),
            client.stream("POST", due.url, content=body, headers=headers) as answer,
        ):
            if answer.is_success:
                return None
            head = b""
            async for chunk in answer.aiter_bytes():
                head += chunk
                if len(head) >= ERROR_CHARS:
                    break
            error = f"HTTP {answer.status_code}"
            text = head.decode("utf-8", "replace").strip()
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error, text = type(exc).__name__, str(exc)
    except TimeoutError:
        error, text = "Timeout", f"no answer within {TIMEOUT:g} s"
    return f"{error}: {text}"[:ERROR_CHARS] if text else error
