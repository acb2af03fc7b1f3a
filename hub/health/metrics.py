"""The hub's own numbers on /metrics, collected when Prometheus scrapes.

Each number comes from the function of the domain that owns it (delivery's queue and oldest
due message, messages in flight, quota alerts) or from what every process added up in Redis
(`hub.health.tally`: gateway calls, receipt lags, the last month's close), and the circuit
breakers' Redis hashes. So any API process answers for the whole cluster.

Each source has `SOURCE_TIMEOUT` seconds; one that fails or is late (Redis or PostgreSQL down)
is left out and `hub_metrics_source_up{source}` says so: /metrics never answers 500 for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from arq.connections import ArqRedis

from hub import calendar
from hub.db import Database
from hub.delivery import routing
from hub.delivery import service as delivery
from hub.health import service as health
from hub.health import tally
from hub.messages import service as messages
from hub.quota import service as quota
from hub.settings import Settings

log = logging.getLogger(__name__)

SOURCE_TIMEOUT = 2.0
# Message statuses always written (0 when none), so an alert on one never finds it missing.
STATUSES = ("accepted", "sending", "sent", "delivered", "undelivered", "failed", "expired")
SEND_STATES = ("scheduled", "held", "review", "queued")
OUTCOMES = ("accepted", "retry", "failed", "unknown")
ERROR_REASONS = ("unreachable", "exception")


class Sample(NamedTuple):
    labels: dict[str, str]
    value: float
    suffix: str = ""  # a histogram's _bucket, _sum, _count


class Family(NamedTuple):
    name: str
    kind: str  # gauge, counter, histogram
    help: str
    samples: list[Sample]


def gauge(name: str, help: str, values: Mapping[str, float] | float, label: str = "") -> Family:
    if isinstance(values, Mapping):
        return Family(name, "gauge", help, [Sample({label: k}, v) for k, v in values.items()])
    return Family(name, "gauge", help, [Sample({}, values)])


# --- the sources -------------------------------------------------------------------------


class Sources(NamedTuple):
    db: Database
    redis: ArqRedis
    settings: Settings

    @property
    def gateways(self) -> list[str]:
        return [g.name for g in self.settings.delivery.gateways]


async def _queue(src: Sources) -> list[Family]:
    lanes = await delivery.queue_by_lane(src.db, src.redis)
    return [gauge("hub_queue_jobs", "Jobs waiting in the arq queue, by lane", lanes, "lane")]


async def _oldest_due(src: Sources) -> list[Family]:
    async with src.db.acquire() as conn, conn.transaction():
        age = await delivery.oldest_due_age(conn)
    return [
        gauge(
            "hub_queue_oldest_due_age_seconds",
            "How long the oldest message due and not yet sent has waited",
            age,
        )
    ]


async def _messages(src: Sources) -> list[Family]:
    async with src.db.acquire() as conn, conn.transaction():
        statuses = await messages.in_flight(conn)
        sends = await messages.open_sends(conn)
    return [
        gauge(
            "hub_messages_in_flight",
            "Messages of the sends being delivered, by status",
            {**dict.fromkeys(STATUSES, 0), **statuses},
            "status",
        ),
        gauge(
            "hub_sends_open",
            "Sends not finished, by state",
            {**dict.fromkeys(SEND_STATES, 0), **sends},
            "state",
        ),
    ]


async def _quota(src: Sources) -> list[Family]:
    async with src.db.acquire() as conn, conn.transaction():
        standing = await quota.alerts_standing(conn, calendar.current_period())
    return [
        gauge(
            "hub_quota_alerts",
            "Tenants whose month's quota stands at or over an alert threshold (percent)",
            {str(k): v for k, v in standing.items()},
            "threshold",
        )
    ]


async def _hash(redis: ArqRedis, metric: str) -> dict[str, float]:
    raw: dict[bytes, bytes] = await redis.hgetall(tally.PREFIX + metric)  # type: ignore[misc]
    return {k.decode(): float(v) for k, v in raw.items()}


def _histogram(name: str, help: str, stored: dict[str, float], gateways: Sequence[str]) -> Family:
    """A histogram per gateway from its stored per-bucket counts, cumulated as Prometheus
    wants; every configured gateway is written (zeros until it is used)."""
    buckets = tally.HISTOGRAMS[name]
    per: dict[str, dict[str, float]] = {g: {} for g in gateways}
    for key, value in stored.items():
        labels = tally.parse_field(key)
        gateway = labels.get("gateway", "")
        part = labels.get("le") or labels.get("stat", "")
        per.setdefault(gateway, {})[part] = per.get(gateway, {}).get(part, 0) + value
    samples: list[Sample] = []
    for gateway, parts in per.items():
        running = 0.0
        for le in [*(f"{b:g}" for b in buckets), "+Inf"]:
            running += parts.get(le, 0)
            samples.append(Sample({"gateway": gateway, "le": le}, running, "_bucket"))
        samples.append(Sample({"gateway": gateway}, parts.get("sum", 0), "_sum"))
        samples.append(Sample({"gateway": gateway}, parts.get("count", 0), "_count"))
    return Family(name, "histogram", help, samples)


def _counter(
    name: str, help: str, stored: dict[str, float], label: str, values: Iterable[str], gw: list[str]
) -> Family:
    counts: dict[tuple[str, str], float] = {(g, v): 0 for g in gw for v in values}
    for key, value in stored.items():
        labels = tally.parse_field(key)
        counts[labels.get("gateway", ""), labels.get(label, "")] = value
    return Family(
        name,
        "counter",
        help,
        [Sample({"gateway": g, label: v}, n) for (g, v), n in sorted(counts.items())],
    )


async def _gateways(src: Sources) -> list[Family]:
    gw = src.gateways
    submit = await _hash(src.redis, tally.SUBMIT_SECONDS)
    errors = await _hash(src.redis, tally.SUBMIT_ERRORS)
    outcomes = await _hash(src.redis, tally.GATEWAY_MESSAGES)
    lags = await _hash(src.redis, tally.RECEIPT_LAG)
    return [
        _histogram(tally.SUBMIT_SECONDS, "Gateway calls (one chunk each), by duration", submit, gw),
        _counter(
            tally.SUBMIT_ERRORS,
            "Gateway calls that raised: unreachable, or failed mid-call",
            errors,
            "reason",
            ERROR_REASONS,
            gw,
        ),
        _counter(
            tally.GATEWAY_MESSAGES,
            "Messages handed to a gateway, by what it answered",
            outcomes,
            "outcome",
            OUTCOMES,
            gw,
        ),
        _histogram(tally.RECEIPT_LAG, "From a message sent to its receipt", lags, gw),
    ]


async def _breakers(src: Sources) -> list[Family]:
    seconds, micros = await src.redis.time()
    now = seconds + micros / 1e6
    is_open: dict[str, float] = {}
    failures: dict[str, float] = {}
    for name in src.gateways:
        # As hub.delivery.routing keeps it: `failures` (chunks failed in a row) and `open_until`
        # (unix seconds, Redis's own clock). No key: closed, no failures.
        key = routing.breaker_key(name)
        got: list[bytes | None] = await src.redis.hmget(key, ["failures", "open_until"])  # type: ignore[misc]
        count, until = (float(v) if v is not None else 0.0 for v in got)
        is_open[name], failures[name] = float(until > now), count
    return [
        gauge(
            "hub_gateway_breaker_open", "1 while a gateway's circuit is open", is_open, "gateway"
        ),
        gauge(
            "hub_gateway_breaker_failures",
            "Chunks a gateway failed in a row (its breaker's count)",
            failures,
            "gateway",
        ),
    ]


async def _billing_close(src: Sources) -> list[Family]:
    last = await _hash(src.redis, tally.CLOSE)
    failures = await _hash(src.redis, tally.CLOSE_FAILURES)
    return [
        gauge(
            "hub_billing_close_duration_seconds",
            "How long the last month's close took",
            last.get("duration_seconds", 0),
        ),
        gauge(
            "hub_billing_close_last_success_timestamp_seconds",
            "When the last month's close ended (unix seconds; 0: none seen)",
            last.get("last_success_timestamp_seconds", 0),
        ),
        Family(
            tally.CLOSE_FAILURES,
            "counter",
            "Month closes that failed (not refusals: an error on the hub's side)",
            [Sample({}, sum(failures.values()))],
        ),
    ]


async def _ready(src: Sources) -> list[Family]:
    checks = await health.readiness(src.db, src.redis)  # never raises: "ok" or what failed
    ready = {name: float(answer == "ok") for name, answer in checks.items()}
    return [gauge("hub_ready", "1 if the dependency answers (as /readyz)", ready, "dependency")]


Source = Callable[[Sources], Awaitable[list[Family]]]
SOURCES: dict[str, Source] = {
    "ready": _ready,
    "queue": _queue,
    "oldest_due": _oldest_due,
    "messages": _messages,
    "quota": _quota,
    "gateways": _gateways,
    "breakers": _breakers,
    "billing_close": _billing_close,
}


async def _run(name: str, source: Source, src: Sources) -> tuple[str, list[Family] | None, float]:
    started = time.monotonic()
    try:
        async with asyncio.timeout(SOURCE_TIMEOUT):
            families = await source(src)
    except Exception as exc:  # a server gone or late: this source is left out, the rest shown
        log.warning("metrics source %s left out: %r", name, exc)
        return name, None, time.monotonic() - started
    return name, families, time.monotonic() - started


async def collect(db: Database, redis: ArqRedis, settings: Settings) -> list[Family]:
    """Every source's families, then whether each source answered and how long it took."""
    src = Sources(db, redis, settings)
    results = await asyncio.gather(*(_run(n, s, src) for n, s in SOURCES.items()))
    families = [f for _, found, _ in results for f in found or []]
    up = {name: float(found is not None) for name, found, _ in results}
    took = {name: seconds for name, _, seconds in results}
    return [
        *families,
        gauge("hub_metrics_source_up", "1 if the source answered this scrape", up, "source"),
        gauge("hub_metrics_source_duration_seconds", "How long the source took", took, "source"),
    ]


class Scrapes:
    """One collection at a time per process: a scrape that comes while one runs gets that one's
    answer. So a flood of scrapes (an outsider's, where /metrics is left open) costs the
    servers one collection after another, never one each at once."""

    def __init__(self) -> None:
        self._running: asyncio.Future[list[Family]] | None = None

    async def collect(self, compute: Callable[[], Awaitable[list[Family]]]) -> list[Family]:
        if self._running is None:
            running = asyncio.ensure_future(compute())
            self._running = running
            running.add_done_callback(lambda _: setattr(self, "_running", None))
        return await asyncio.shield(self._running)


# --- the text format ---------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def render(families: Iterable[Family]) -> str:
    """Prometheus text format 0.0.4."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
            name = family.name + sample.suffix
            lines.append(f"{name}{{{labels}}}" if labels else name)
            lines[-1] += f" {_number(sample.value)}"
    return "\n".join(lines) + "\n"
