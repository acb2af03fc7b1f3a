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

Only public addresses are called (unless `HUB_DELIVERY__WEBHOOKS_PRIVATE_OK`). The push client
resolves a host once per connection, checks every address it resolves to, and connects to one of
those very addresses, never to the name again: a name that answers a public address to the check
and 127.0.0.1 to the connection (DNS rebinding) cannot slip between the two. The Host header, TLS
SNI and the certificate check still name the host. Refused: private, loopback, link-local,
shared (100.64/10), multicast, reserved, documentation, site-local and unique-local addresses,
and IPv6 addresses that carry a refused IPv4 one (IPv4-mapped `::ffff:127.0.0.1`, IPv4-compatible
`::127.0.0.1`, NAT64 `64:ff9b::7f00:1`, 6to4 `2002:7f00:1::`, Teredo) — `is_public` is the rule.
A refusal is a failed attempt like any other, with the reason in `last_error`. Redirects are not
followed, and no proxy from the environment is used (the check must see the address it connects
to). Setting a webhook refuses at once (422) a literal address that is not public, `localhost`, and
an IPv4 address in a spelling only a resolver reads (`0177.0.0.1`, `0x7f000001`, `2130706433`,
`127.1`: `refusal`).

`attempts` counts every POST, the successful one too. A push may arrive more than once (a worker
dying between the call and its record, a lease running out): receivers dedupe on
`X-Hub-Delivery`, the same for every attempt at one reply.

The request: `POST <url>` with `Content-Type: application/json`, the body an `InboundView`
(`{"id", "tenant", "phone", "address", "text", "opt_out", "gateway", "received_at"}`, written as
the API writes it: `received_at` is `2027-03-16T10:00:00.000000+08:00`), and

    X-Hub-Delivery:  <delivery id>
    X-Hub-Timestamp: <unix seconds when this attempt was sent>
    X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
    X-Hub-Signature-Previous: sha256=<the same under the previous secret>  (during a rotation)

How a tenant verifies one (`verify` does exactly this; `sign` is the recipe): take the raw body
bytes as received (before any JSON parsing), recompute `sign(secret, timestamp_header, body)`,
compare it with `X-Hub-Signature` in constant time (`hmac.compare_digest`), and reject a
timestamp more than 5 minutes from its own clock, so a captured request cannot be replayed
later. Then answer 2xx quickly; anything else is retried.

Rotating the secret: for `SECRET_OVERLAP` (a day) after a tenant sets a new secret, each push
also carries `X-Hub-Signature-Previous`, the same signature under the secret it replaced. A
receiver that accepts either header (`verify(..., previous_signature=...)`) keeps accepting
pushes whichever secret it holds while it is switched; `X-Hub-Signature` alone is always the
new secret's, so receivers that read only it behave as before. Setting the same secret again
does not restart the day.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import math
import random
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol
from urllib.parse import urlsplit

import asyncpg
import httpcore
import httpx
import msgspec
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from hub import wire
from hub.db import Database
from hub.delivery import repository as sql
from hub.delivery.repository import DueWebhook
from hub.delivery.schemas import InboundView, WebhookSetting, WebhookView
from hub.errors import Invalid
from hub.oplog import service as oplog
from tenants import service as tenants
from tenants.service import Principal

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
# After a new secret is set, pushes are signed under the one it replaced too, this long.
SECRET_OVERLAP = 24 * 3600.0
PREVIOUS_HEADER = "X-Hub-Signature-Previous"


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
    previous_signature: str = "",
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> bool:
    """A receiver's check: `signature` (X-Hub-Signature) or, during a rotation,
    `previous_signature` (X-Hub-Signature-Previous) matches (constant-time, both compared), and
    the timestamp is within `tolerance` seconds of `now` (default: the clock). So a receiver
    holding either the new or the old secret accepts the push."""
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode()
    # Bytes: compare_digest refuses str with non-ASCII characters, which a header may hold.
    current = hmac.compare_digest(expected, signature.encode("utf-8", "replace"))
    previous = hmac.compare_digest(expected, previous_signature.encode("utf-8", "replace"))
    return current or previous


def retry_delay(attempts: int) -> float:
    """Seconds before trying again after `attempts` failed ones: doubling, capped, jittered."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempts - 1))
    jitter: float = random.uniform(0.5, 1.0)
    return ceiling * jitter


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 prefixes whose last 32 bits are the IPv4 address a packet ends up at: IPv4-compatible
# (::a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d) and NAT64's well-known prefix (RFC 6052).
# (IPv4-mapped, 6to4 and Teredo have properties of their own in `ipaddress`.)
_CARRY_LAST_32_BITS = tuple(
    ipaddress.IPv6Network(prefix) for prefix in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96")
)
# Not reachable from the public internet, though Python 3.11's `is_global` takes them for it.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(prefix)
    for prefix in (
        "fec0::/10",  # site-local: deprecated, still routed inside some sites
        "64:ff9b:1::/48",  # NAT64 for local use (RFC 8215): an operator's own translator
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 segment identifiers (RFC 9602)
    )
)
# An IPv4 address's last part as a resolver reads it: decimal, octal (leading 0) or hex (0x).
_NUMERIC_PART = re.compile(r"^(0x[0-9a-f]*|[0-9]+)\Z", re.IGNORECASE)


def carried_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address leads to: IPv4-mapped and -compatible, NAT64, 6to4,
    and Teredo (its server, and its client with the obfuscation undone)."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    if any(ip in prefix for prefix in _CARRY_LAST_32_BITS):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF),)
    return ()


def is_public(ip: IPAddress) -> bool:
    """May a webhook reach this address: it is globally reachable, not multicast, and every
    IPv4 address it carries is public too (so `64:ff9b::7f00:1` is refused like 127.0.0.1)."""
    if not ip.is_global or ip.is_multicast or any(ip in net for net in _NOT_GLOBAL):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        return all(is_public(carried) for carried in carried_ipv4(ip))
    return True


def _anywhere(ip: IPAddress) -> bool:
    return True


def refusal(url: str, *, private_ok: bool) -> str | None:
    """Why a webhook URL is refused when it is set, without any lookup, or None: not a URL the
    client can call; an IPv4 address in a spelling only a resolver reads; or, unless
    `private_ok`, a literal address that is not public, or localhost."""
    try:
        host = httpx.URL(url).host.rstrip(".")  # a trailing dot names the same host
    except (httpx.InvalidURL, ValueError) as exc:  # ValueError: a bad IDNA label (xn--)
        # httpx itself refuses some odd spellings (0177.0.0.1): say what they are.
        return _odd_ipv4(_hostname(url)) or f"not a URL the hub can call: {exc}"
    try:
        ip: IPAddress = ipaddress.ip_address(host)
    except ValueError:
        if odd := _odd_ipv4(host):
            return odd
        local = host == "localhost" or host.endswith(".localhost")
        return f"{host} is this machine, not a public address" if local and not private_ok else None
    if private_ok or is_public(ip):
        return None
    carried = carried_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else ()
    leads = f" (it leads to {', '.join(map(str, carried))})" if carried else ""
    return f"{host} is not a public address{leads}"


def _hostname(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""


def _odd_ipv4(host: str) -> str | None:
    """Why a host that is no standard address literal but ends in a number is refused, or None.
    `0177.0.0.1`, `0x7f000001`, `2130706433`, `127.1` are all 127.0.0.1 to a resolver (inet_aton,
    as getaddrinfo reads them) but not to `ipaddress`, nor to whoever reads the URL: refused,
    wherever they lead."""
    if not host or not _NUMERIC_PART.match(host.rsplit(".", 1)[-1]):
        return None
    try:
        ip = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return f"{host} ends in a number but is not an IPv4 address"
    private = "" if is_public(ip) else f"; {ip} is not a public address"
    return f"{host} is the IPv4 address {ip} in octal, hex or short form: write {ip}{private}"


class Resolver(Protocol):
    """Names to addresses, for the push client. The system's resolver unless one is given."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses `host` has (IPv4 or IPv6 text), best first; OSError if none."""
        ...


class SystemResolver:
    """getaddrinfo, off the event loop (as httpx itself would look the host up)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(address[0]) for *_, address in found))


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's TCP connections for pushes: the host is resolved once, every address checked
    with `allowed`, and the connection made to one of those addresses, never to the name again.
    httpcore starts TLS on the stream this returns with the request's host as SNI and as the
    name the certificate must match, so pinning the address changes nothing there."""

    def __init__(self, resolver: Resolver, allowed: Callable[[IPAddress], bool]) -> None:
        self._resolver, self._allowed = resolver, allowed
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in await self._addresses(host, port):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # the next address, as getaddrinfo's callers do
        assert failure is not None  # _addresses gives at least one
        raise failure

    async def _addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses to try, in the resolver's order; ConnectError if any of them
        is refused (a name that also leads inward is not called at all) or there are none."""
        try:
            ipaddress.ip_address(host)
            addresses = [host]  # a literal: nothing to look up
        except ValueError:
            try:
                addresses = await self._resolver.resolve(host, port)
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])  # a zone is not part of it
            except ValueError as exc:
                raise httpcore.ConnectError(f"{host} resolved to {address!r}") from exc
            if not self._allowed(ip):
                raise httpcore.ConnectError(
                    f"{host} is {address}, not a public address (webhooks call the public "
                    "internet only)"
                )
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are pushed over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport over a connection pool that connects through `PinnedBackend`."""

    def __init__(self, backend: PinnedBackend, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(verify=verify)
        # httpx takes no network backend, so its pool is replaced by the same pool built with
        # ours. Should httpx ever keep its pool elsewhere, stop rather than push unguarded.
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx's transport has no httpcore pool to guard")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=100,  # httpx's own defaults
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=backend,
        )


def client(
    *,
    private_ok: bool = False,
    resolver: Resolver | None = None,
    allowed: Callable[[IPAddress], bool] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """The HTTP client pushes go through (one per worker). It connects only to addresses
    `allowed` passes (`is_public`, or any with `private_ok`), found by `resolver` (the system's)
    once per connection; `verify` as httpx takes it. No redirects, no proxies from the
    environment: the check must see the address the connection goes to."""
    backend = PinnedBackend(
        resolver or SystemResolver(), allowed or (_anywhere if private_ok else is_public)
    )
    return httpx.AsyncClient(
        timeout=TIMEOUT,
        headers={"User-Agent": "sms-hub-webhooks/1"},
        transport=PinnedTransport(backend, verify),
        follow_redirects=False,
        trust_env=False,
    )


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
        body = wire.encode(msgspec.convert(row, InboundView))  # the API's own form
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
    if due.previous_secret is not None:  # a rotation's overlap: the old secret signs too
        headers[PREVIOUS_HEADER] = sign(due.previous_secret, timestamp, body)
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


# --- the setting: PUT/GET/DELETE /v1/tenants/{code}/webhook and the console's webhook page ---


async def current(conn: asyncpg.Connection, who: Principal, code: str) -> WebhookView | None:
    """The webhook of `code` (the caller's subtree, else 404): its URL, never its secret."""
    tenant = await tenants.get_visible(conn, who, code)
    record = await conn.fetchrow(sql.GET_WEBHOOK, tenant.id)
    return None if record is None else msgspec.convert(dict(record.items()), WebhookView)


async def set_webhook(
    conn: asyncpg.Connection, who: Principal, code: str, data: WebhookSetting, private_ok: bool
) -> None:
    """Push `code`'s replies to `data.url`, signed with `data.secret` (and for SECRET_OVERLAP
    with the secret it replaces, if it is new); logged (the URL only)."""
    tenant = await tenants.get_visible(conn, who, code)
    problem = refusal(data.url, private_ok=private_ok)
    if problem:
        raise Invalid(
            f"webhook URL refused: {problem}",
            fields=[{"key": "url", "message": problem, "source": "body"}],
        )
    before = await _logged_url(conn, tenant.id)
    await conn.execute(sql.SET_WEBHOOK, tenant.id, data.url, data.secret, SECRET_OVERLAP)
    url = {"url": data.url}  # the signing secret is never logged
    await oplog.record(conn, who, "webhook.set", tenant_id=tenant.id, before=before, after=url)


async def delete_webhook(conn: asyncpg.Connection, who: Principal, code: str) -> None:
    """Stop pushing `code`'s replies: the webhook and its pending pushes go (repeats are fine)."""
    tenant = await tenants.get_visible(conn, who, code)
    before = await _logged_url(conn, tenant.id)
    await conn.execute(sql.DELETE_WEBHOOK, tenant.id)
    await oplog.record(conn, who, "webhook.delete", tenant_id=tenant.id, before=before)


async def _logged_url(conn: asyncpg.Connection, tenant_id: int) -> dict[str, str] | None:
    """The webhook as the operation log records it: its URL (never its secret)."""
    record = await conn.fetchrow(sql.GET_WEBHOOK, tenant_id)
    return None if record is None else {"url": record["url"]}
