"""Reads that may lag: a hot standby for the dashboard's pages, statements, the archive and
/v1/usage.

With `HUB_DB__READ_DSN` set, each API process opens a second pool, to a PostgreSQL streaming
replica. Those routes take `read_conn` (a read-only transaction) instead of `conn`: on the
standby while it is at most `HUB_DB__READ_MAX_LAG_SECONDS` behind the primary, on the primary
otherwise, or when the standby cannot be reached, or when no standby is set. Every write, the
sign-in checks (a revoked key stops at once) and every other route stay on the primary. The
answer says which side served it (`X-Hub-Read: standby|primary`), and `hub_reads_total` counts
the reads by side and reason.

How far behind (`lag_bound`): the primary's WAL flush position is read first, then the
standby's replay position. If the standby has replayed up to it, every commit made before the
check is there: the lag is the few milliseconds the check took, whether or not the primary is
idle. If not, the standby is asked once more a moment later (a commit in flight arrives within
milliseconds). Still behind, the smaller of two bounds counts: the time since an earlier check
whose primary position the standby has replayed by now (the process's own monotonic clock), and
the age of the last commit the standby replayed (the servers' clocks: alone it would be wrong on
an idle primary, where it grows with nothing missing). Each is an upper bound of how old the
standby's view is. The verdict is kept about a second per process (`CHECK_SECONDS`): two or
three small queries a second, whatever the traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal

import asyncpg
import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.types import Message, Scope
from prometheus_client import Counter

from hub.db import Database, unreachable

log = logging.getLogger("hub.reads")

Side = Literal["standby", "primary"]
# The answer's header naming the side that served a read.
HEADER = "X-Hub-Read"
# The `read_conn` dependency (provide_read_connection).
ReadConn = NamedDependency[asyncpg.Connection]
# Where the side is noted on the request (its scope's state) for the header.
_NOTE = "hub_read"
# How long a verdict holds, in seconds; and how long one check may take (a standby that does
# not answer within it counts as unreachable).
CHECK_SECONDS = 1.0
CHECK_TIMEOUT = 1.0
# A standby found behind the primary's position is asked again this much later: a commit in
# flight reaches it within milliseconds, a real lag does not.
SETTLE = 0.05
# Primary positions remembered for the replayed-position bound (about a minute of checks).
HISTORY = 64

READS = Counter(
    "hub_reads_total",
    "Reads that may lag, by the side that served them and why (fresh, lag, unreachable, "
    "not_standby, unmeasured, no_standby, own_write)",
    ["side", "reason"],
)

# The primary's position: what it has flushed (what a standby can have received), in bytes.
PRIMARY_POSITION = "SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn"
# The standby's view: in recovery at all (a promoted standby is no longer one), what it has
# replayed, and the age of the last commit it replayed (None before the first).
STANDBY_POSITION = """
SELECT pg_is_in_recovery() AS recovering,
       pg_last_wal_replay_lsn() - '0/0'::pg_lsn AS replayed,
       extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
           AS since_commit
"""


class Verdict(msgspec.Struct, frozen=True):
    """Which side serves reads until `until` (monotonic seconds), and why."""

    side: Side
    reason: str
    lag: float | None
    until: float
    cause: str = ""  # the error that made it, if one did


class Standby:
    """One per API process: the standby's pool and the latest verdict on its lag."""

    def __init__(self, db: Database, primary: Database, max_lag: float) -> None:
        self.db = db
        self.primary = primary
        self.max_lag = max_lag
        self._verdict: Verdict | None = None
        self._checking = asyncio.Lock()
        # (monotonic time, primary flush position) of earlier checks, oldest first.
        self._seen: deque[tuple[float, int]] = deque(maxlen=HISTORY)

    async def verdict(self) -> Verdict:
        """The side reads go to now: measured at most every CHECK_SECONDS, by one request.
        The others meanwhile go by the last verdict (no request waits on the standby's round
        trips); only the process's first requests wait for the first one."""
        if (held := self._verdict) is not None and time.monotonic() < held.until:
            return held
        if held is not None and self._checking.locked():
            return held
        async with self._checking:
            if (held := self._verdict) is not None and time.monotonic() < held.until:
                return held
            fresh = await self._measure()
            self._settle(fresh)
            return fresh

    def lost(self, exc: BaseException) -> None:
        """The standby failed a request's connection: the primary serves until the next check."""
        self._settle(self._verdict_of("primary", "unreachable", None, exc))

    def _settle(self, fresh: Verdict) -> None:
        before = self._verdict
        if before is None or (before.side, before.reason) != (fresh.side, fresh.reason):
            lag = "unknown" if fresh.lag is None else f"{fresh.lag:.3f} s"
            level = logging.INFO if fresh.side == "standby" else logging.WARNING
            cause = f": {fresh.cause}" if fresh.cause else ""
            log.log(
                level, "reads go to the %s (%s; lag %s)%s", fresh.side, fresh.reason, lag, cause
            )
        self._verdict = fresh

    def _verdict_of(
        self, side: Side, reason: str, lag: float | None, exc: BaseException | None = None
    ) -> Verdict:
        cause = "" if exc is None else repr(exc)[:200]
        return Verdict(side, reason, lag, time.monotonic() + CHECK_SECONDS, cause)

    async def _measure(self) -> Verdict:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                checked = time.monotonic()
                async with self.primary.acquire() as conn:
                    flushed = int(await conn.fetchval(PRIMARY_POSITION))
        except Exception as exc:
            if not unreachable(exc):
                raise
            # The primary does not answer: nothing to compare with; its own reads will say so.
            return self._verdict_of("primary", "unmeasured", None, exc)
        self._seen.append((checked, flushed))
        try:
            async with asyncio.timeout(CHECK_TIMEOUT), self.db.acquire() as conn:
                row = await conn.fetchrow(STANDBY_POSITION)
                if row is not None and row["recovering"] and (row["replayed"] or 0) < flushed:
                    # Behind at this very instant: a commit on its way, or a real lag. A
                    # moment later tells them apart.
                    await asyncio.sleep(SETTLE)
                    row = await conn.fetchrow(STANDBY_POSITION)
        except Exception as exc:
            if not unreachable(exc):
                raise
            return self._verdict_of("primary", "unreachable", None, exc)
        assert row is not None
        if not row["recovering"]:
            # Promoted (or never a standby): its data is not known to follow the primary's.
            return self._verdict_of("primary", "not_standby", None)
        replayed = int(row["replayed"] or 0)
        lag = lag_bound(time.monotonic(), self._seen, replayed, row["since_commit"])
        if lag <= self.max_lag:
            return self._verdict_of("standby", "fresh", lag)
        return self._verdict_of("primary", "lag", lag)


def lag_bound(
    now: float, seen: Iterable[tuple[float, int]], replayed: int, since_commit: float | None
) -> float:
    """How old a standby's view may be at `now`, in seconds: an upper bound, the smaller of
    two. `seen`: (when, the primary's flush position then) of this and earlier checks, on the
    process's monotonic clock; the standby has replayed up to `replayed`, so every commit
    before the newest such moment whose position it has reached is there. `since_commit`: the
    age of the last commit it replayed (None before its first), which an idle primary makes
    large though nothing is missing, hence the first bound."""
    bounds = [max(since_commit, 0.0)] if since_commit is not None else []
    covered = [at for at, position in seen if position <= replayed]
    if covered:
        bounds.append(max(now - max(covered), 0.0))
    return min(bounds, default=math.inf)


def standby_of(state: State) -> Standby | None:
    standby: Standby | None = state.get("standby")
    return standby


def note(scope: Scope, side: Side) -> None:
    """Say in the answer's header which side served this request's reads."""
    scope.setdefault("state", {})[_NOTE] = side


def _count(scope: Scope, side: Side, reason: str) -> None:
    note(scope, side)
    READS.labels(side, reason).inc()


async def _side(state: State) -> tuple[Standby | None, Verdict | None]:
    standby = standby_of(state)
    if standby is None:
        return None, None
    return standby, await standby.verdict()


@contextlib.asynccontextmanager
async def reading(
    state: State, scope: Scope, *, own_write: bool = False
) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a read-only transaction, on the standby when it is fresh enough, else
    on the primary. A standby that fails to give a connection sends this read (and the next
    second's) to the primary. `own_write`: the page shows the viewer's own change just made
    (a form's redirect), which only the primary is sure to hold."""
    standby, verdict = (None, None) if own_write else await _side(state)
    reason = "own_write" if own_write else "no_standby"
    if standby is not None and verdict is not None:
        reason = verdict.reason
        if verdict.side == "standby":
            stack = contextlib.AsyncExitStack()
            try:
                conn = await stack.enter_async_context(standby.db.acquire())
                await stack.enter_async_context(conn.transaction(readonly=True))
            except Exception as exc:
                await stack.aclose()
                if not unreachable(exc):
                    raise
                standby.lost(exc)
                reason = "unreachable"
            else:
                async with stack:
                    _count(scope, "standby", reason)
                    yield conn
                return
    _count(scope, "primary", reason)
    db: Database = state.db
    async with db.acquire() as conn, conn.transaction(readonly=True):
        yield conn


async def reader(state: State, scope: Scope) -> Database:
    """Where a streamed export reads (it opens its own connections after the handler
    returns): the standby's pool when it is fresh enough, else the primary's."""
    standby, verdict = await _side(state)
    if standby is not None and verdict is not None and verdict.side == "standby":
        _count(scope, "standby", verdict.reason)
        return standby.db
    _count(scope, "primary", verdict.reason if verdict is not None else "no_standby")
    primary: Database = state.db
    return primary


async def provide_read_connection(
    state: State, request: Request[Any, Any, Any]
) -> AsyncIterator[asyncpg.Connection]:
    """Litestar yield dependency `read_conn`: one read-only transaction per request, where
    `reading` puts it."""
    async with reading(state, request.scope) as conn:
        yield conn


async def mark_side(message: Message, scope: Scope) -> None:
    """before_send hook: the `X-Hub-Read` header on the answers of reads that chose a side."""
    if message["type"] != "http.response.start":
        return
    side = scope.get("state", {}).get(_NOTE)
    if side is not None:
        headers = list(message.get("headers", []))
        headers.append((HEADER.lower().encode(), side.encode()))
        message["headers"] = headers
