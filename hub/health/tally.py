"""What processes measure for /metrics, added up in Redis so one scrape shows the whole cluster.

Workers time their gateway calls and count their outcomes; whoever applies receipts (a worker or
an API process) times how long they took; the API process that closes a month times the close.
Each process adds its observations to a `Tally` in memory (no network call on the hot path, none
inside a transaction) and `flush` moves them into Redis hashes, a pipeline of HINCRBYFLOAT (and
HSET for the last close), every `FLUSH_SECONDS` and when the process stops. Any API process
renders the hashes at scrape time (`hub.health.metrics`). What a flush could not write stays in
memory for the next one; a process killed between two flushes loses at most that much.

Redis keys (`hub:metrics:<metric>`), fields `label=value,label=value` (gateway names hold no
`,` or `=`); a histogram keeps one field per bucket (not cumulative; `le=+Inf` for the rest) and
`…,sum` / `…,count` beside them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import defaultdict

from arq.connections import ArqRedis

log = logging.getLogger(__name__)

PREFIX = "hub:metrics:"
FLUSH_SECONDS = 5.0
FLUSH_TIMEOUT = 2.0

# A gateway call (one chunk, up to 100 messages): SMPP answers in milliseconds, HTTP gateways
# in tens to hundreds; a call timing out is seconds.
SUBMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# From sent to its receipt: seconds for SMPP, minutes for a phone switched off, hours at worst.
RECEIPT_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)

# The metrics a tally holds, named as /metrics exports them.
SUBMIT_SECONDS = "hub_gateway_submit_duration_seconds"
SUBMIT_ERRORS = "hub_gateway_submit_errors_total"
GATEWAY_MESSAGES = "hub_gateway_messages_total"
RECEIPT_LAG = "hub_receipt_lag_seconds"
CLOSE_FAILURES = "hub_billing_close_failures_total"
CLOSE = "hub_billing_close"  # a hash of gauges: the last close (see `closed`)
CLOSE_FIELDS = ("duration_seconds", "last_success_timestamp_seconds")

HISTOGRAMS = {SUBMIT_SECONDS: SUBMIT_BUCKETS, RECEIPT_LAG: RECEIPT_BUCKETS}
COUNTERS = (SUBMIT_ERRORS, GATEWAY_MESSAGES, CLOSE_FAILURES)

Labels = tuple[tuple[str, str], ...]


def field(labels: Labels) -> str:
    return ",".join(f"{k}={v}" for k, v in labels)


def parse_field(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if part)


def bucket_of(value: float, buckets: tuple[float, ...]) -> str:
    """The `le` of the first bucket that holds `value` (as /metrics writes it)."""
    at = bisect.bisect_left(buckets, value)
    return f"{buckets[at]:g}" if at < len(buckets) else "+Inf"


class Tally:
    """One process's observations not yet in Redis."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.gauges: dict[str, dict[str, float]] = defaultdict(dict)
        self._flusher: asyncio.Task[None] | None = None

    def start_flushing(self, redis: ArqRedis) -> None:
        """Flush every FLUSH_SECONDS until `stop_flushing`."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                await self.flush(redis)

        if self._flusher is None:
            self._flusher = asyncio.create_task(loop())

    async def stop_flushing(self, redis: ArqRedis) -> None:
        """Stop the flushes, then flush what is left once."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush(redis)

    def count(self, metric: str, amount: float = 1, **labels: str) -> None:
        if amount:
            self.counts[metric][field(tuple(labels.items()))] += amount

    def observe(self, metric: str, value: float, **labels: str) -> None:
        """One observation of a histogram (`HISTOGRAMS`)."""
        key = tuple(labels.items())
        counts = self.counts[metric]
        counts[field((*key, ("le", bucket_of(value, HISTOGRAMS[metric]))))] += 1
        counts[field((*key, ("stat", "sum")))] += value
        counts[field((*key, ("stat", "count")))] += 1

    def closed(self, seconds: float, at: float) -> None:
        """A month closed: how long it took and when it ended (unix seconds)."""
        self.gauges[CLOSE].update(
            {"duration_seconds": seconds, "last_success_timestamp_seconds": at}
        )

    def _take(self) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        counts, gauges = self.counts, self.gauges
        self.counts = defaultdict(lambda: defaultdict(float))
        self.gauges = defaultdict(dict)
        return counts, gauges

    def _put_back(
        self, counts: dict[str, dict[str, float]], gauges: dict[str, dict[str, float]]
    ) -> None:
        for metric, fields in counts.items():
            for name, amount in fields.items():
                self.counts[metric][name] += amount
        for metric, values in gauges.items():
            # A newer value taken meanwhile wins over the one that was not written.
            self.gauges[metric] = {**values, **self.gauges[metric]}

    async def flush(self, redis: ArqRedis) -> bool:
        """Add what this process observed to Redis; False (kept for the next flush) if Redis
        did not take it."""
        counts, gauges = self._take()
        if not counts and not gauges:
            return True
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT):
                async with redis.pipeline(transaction=False) as pipe:
                    for metric, fields in counts.items():
                        for name, amount in fields.items():
                            pipe.hincrbyfloat(PREFIX + metric, name, amount)
                    for metric, values in gauges.items():
                        pipe.hset(PREFIX + metric, mapping=values)
                    await pipe.execute()
        except Exception as exc:  # redis-py's own errors, OSError, the timeout
            # A pipeline that failed midway may have added part: counting that part again is
            # the lesser harm (a counter a little high) beside losing what the process saw.
            self._put_back(counts, gauges)
            log.warning("metrics not flushed to Redis (%r); kept for the next flush", exc)
            return False
        return True
