"""A standby for reads: the dashboard, /v1/usage, statements and the archive read a real hot
standby (streaming replication, built with pg_basebackup) while it keeps up, and the primary
when it lags past `HUB_DB__READ_MAX_LAG_SECONDS` or is down; every write stays on the primary.

The pair is this module's own: an embedded primary made with initdb, migrated as the suite's
databases are (its clock shift set on the database, which replicates), and a standby cloned
from it. The app opens both pools itself, as `hub serve` does. `X-Hub-Read` on each answer says
which side served it; what the standby holds is read on it directly.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import asyncpg
import httpx
import pytest

from hub import calendar
from hub.app import create_app
from hub.calendar import current_period, period_text, previous_period
from hub.db import create_database, migrate
from hub.reads import HEADER
from hub.settings import load_settings
from tests.conftest import _clone
from tests.factories import bearer, grant, make_key, make_small_tree
from tests.peers.standby import Pair

pytestmark = pytest.mark.slow

ORIGIN = "http://hub.test"
SAME_ORIGIN = {"Origin": ORIGIN}
# Small, so that a paused standby falls behind it within a second or two.
MAX_LAG = "0.5"
# How long a condition may take before the test fails (it never sleeps for a set time).
PATIENCE = 20.0


@dataclass(frozen=True)
class Hub:
    pair: Pair
    client: httpx.AsyncClient
    province_key: str  # 510000, every scope
    period: date


async def _migrated_primary(pair: Pair) -> str:
    """The primary's `hub` database: migrated, then cloned as the suite clones its databases
    (the clock's shift on the database, the months' partitions made ahead)."""
    admin = pair.primary.dsn()
    template = await create_database(admin, "hub_tpl")
    await asyncio.to_thread(migrate, template)
    return await _clone(admin, "hub", "hub_tpl")


@pytest.fixture(scope="module")
async def pair() -> AsyncIterator[Pair]:
    base = Path(tempfile.mkdtemp(prefix="hub-sb-", dir="/tmp"))
    made = Pair(base)
    try:
        await asyncio.to_thread(made.start_primary)
        await _migrated_primary(made)
        await asyncio.to_thread(made.clone_standby)
        await asyncio.to_thread(made.start, made.standby)
        yield made
    finally:
        await asyncio.to_thread(made.close)


@pytest.fixture(scope="module")
async def hub(pair: Pair, redis_dsn: str) -> AsyncIterator[Hub]:
    """The app on both servers (its own pools, opened by its lifespan), signed in to the
    dashboard with the operator's key."""
    conn = await asyncpg.connect(pair.primary.dsn("hub"))
    try:
        await make_small_tree(conn)
        await grant(conn, {"000000": 1_000_000, "510000": 100_000})
        province_key = await make_key(conn, "510000")
        operator_key = await make_key(conn, "000000")
    finally:
        await conn.close()
    settings = load_settings(
        {
            "HUB_DB__DSN": pair.primary.dsn("hub"),
            "HUB_DB__READ_DSN": pair.standby.dsn("hub"),
            "HUB_DB__READ_MAX_LAG_SECONDS": MAX_LAG,
            "HUB_DB__CONNECT_TIMEOUT": "2",
            "HUB_REDIS__DSN": redis_dsn,
            "HUB_MESSAGES__QUIET_HOURS": "false",
            # The test asks again and again while it waits: no request limit in its way.
            "HUB_LIMITS__KEY_RATE": "100000",
            "HUB_LIMITS__KEY_BURST": "1000000",
            "HUB_LIMITS__TENANT_RATE": "100000",
            "HUB_LIMITS__TENANT_BURST": "1000000",
        }
    )
    app = create_app(settings)
    started, done = asyncio.Event(), asyncio.Event()

    async def serve() -> None:
        # The lifespan opens and closes the pools in one task (anyio requires it).
        async with app.lifespan():
            started.set()
            await done.wait()

    serving = asyncio.create_task(serve())
    await asyncio.wait_for(started.wait(), PATIENCE)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
    try:
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
            signed = await client.post(
                "/dashboard/login", data={"key": operator_key}, headers=SAME_ORIGIN
            )
            assert signed.status_code == 303, signed.text
            yield Hub(pair, client, province_key, current_period())
    finally:
        done.set()
        await serving


async def until(
    probe: Callable[[], Awaitable[httpx.Response]],
    holds: Callable[[httpx.Response], bool],
    what: str,
) -> httpx.Response:
    """`probe()` again and again until its answer `holds` (each answer must be a 200)."""
    answer = None
    async with asyncio.timeout(PATIENCE):
        while True:
            answer = await probe()
            assert answer.status_code == 200, answer.text
            if holds(answer):
                return answer
            await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: last answer {answer}")


async def _set_limit(hub: Hub, code: str, limit: int) -> None:
    """A write through the API (it goes to the primary)."""
    answer = await hub.client.put(
        f"/v1/tenants/{code}/quota/{period_text(hub.period)}",
        json={"limit": limit},
        headers=bearer(hub.province_key),
    )
    assert answer.status_code == 200, answer.text
    assert HEADER not in answer.headers  # not a read that may lag


def _overview(hub: Hub) -> Callable[[], Awaitable[httpx.Response]]:
    async def probe() -> httpx.Response:
        return await hub.client.get(f"/dashboard/t/510000?period={period_text(hub.period)}")

    return probe


def _usage(hub: Hub) -> Callable[[], Awaitable[httpx.Response]]:
    async def probe() -> httpx.Response:
        return await hub.client.get(
            f"/v1/usage?period={period_text(hub.period)}", headers=bearer(hub.province_key)
        )

    return probe


def _shows(side: str, limit: int) -> Callable[[httpx.Response], bool]:
    def holds(answer: httpx.Response) -> bool:
        return answer.headers[HEADER] == side and f'data-limit="{limit}"' in answer.text

    return holds


async def _standby_limit(pair: Pair, code: str, period: date) -> int | None:
    """510100's limit as the standby itself holds it."""
    conn = await asyncpg.connect(pair.standby.dsn("hub"))
    try:
        limit: int | None = await conn.fetchval(
            "SELECT a.limit_segments FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id"
            " WHERE t.code = $1 AND a.period = $2",
            code,
            period,
        )
        return limit
    finally:
        await conn.close()


async def _on_standby(pair: Pair, query: str) -> object:
    conn = await asyncpg.connect(pair.standby.dsn("hub"))
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def _reads_counted(hub: Hub, reason: str) -> float:
    """How many reads /metrics says went to the primary for `reason` (0 before the first)."""
    metrics = await hub.client.get("/metrics")
    series = f'hub_reads_total{{reason="{reason}",side="primary"}} '
    found = [line for line in metrics.text.splitlines() if line.startswith(series)]
    return float(found[0].removeprefix(series)) if found else 0.0


async def test_the_standby_is_a_replica_on_the_hub_clock(hub: Hub) -> None:
    """The standby is in recovery, and its database carries the primary's clock shift (ALTER
    DATABASE … SET replicates): hub_now() there reads the clock it reads on the primary, on a
    connection that sets nothing itself."""
    assert await _on_standby(hub.pair, "SELECT pg_is_in_recovery()") is True
    shift = "SELECT extract(epoch FROM hub_now() - now())::float8"
    expected = calendar.CLOCK.offset.total_seconds()
    assert await _on_standby(hub.pair, shift) == pytest.approx(expected, abs=1e-3)
    primary = await asyncpg.connect(hub.pair.primary.dsn("hub"))
    try:
        assert await primary.fetchval(shift) == pytest.approx(expected, abs=1e-3)
    finally:
        await primary.close()


async def test_reads_follow_the_standby_and_the_primary_while_it_lags(hub: Hub) -> None:
    overview = _overview(hub)
    # Written on the primary through the API, read on the standby once it has replayed it.
    await _set_limit(hub, "510100", 12_345)
    await until(overview, _shows("standby", 12_345), "the standby serves the new limit")
    await until(_usage(hub), lambda a: a.headers[HEADER] == "standby", "usage on the standby")
    activity = f"/dashboard/t/510000/activity?period={period_text(hub.period)}"

    async def activity_page() -> httpx.Response:
        return await hub.client.get(activity)

    await until(activity_page, lambda a: a.headers[HEADER] == "standby", "activity on standby")
    # The page a quota form returns to (`saved`) reads the primary, fresh standby or not.
    saved = await hub.client.get(f"{activity}&saved=510100")
    assert saved.status_code == 200, saved.text
    assert saved.headers[HEADER] == "primary"

    # Replay paused: the next write stays on the primary only; reads turn to the primary once
    # the standby is further behind than the setting, and show the new limit.
    lagged_before = await _reads_counted(hub, "lag")
    await _on_standby(hub.pair, "SELECT pg_wal_replay_pause()")
    try:
        await _set_limit(hub, "510100", 23_456)
        await until(overview, _shows("primary", 23_456), "reads fall back to the primary")
        assert await _standby_limit(hub.pair, "510100", hub.period) == 12_345
        assert await _reads_counted(hub, "lag") > lagged_before
        assert await _reads_counted(hub, "own_write") > 0
    finally:
        await _on_standby(hub.pair, "SELECT pg_wal_replay_resume()")
    # Replay resumed: the standby catches up and serves again.
    await until(overview, _shows("standby", 23_456), "reads come back to the standby")
    assert await _standby_limit(hub.pair, "510100", hub.period) == 23_456


async def test_an_idle_primary_is_no_lag(hub: Hub) -> None:
    """While the primary commits nothing, the last commit the standby replayed grows old (the
    age `now() - pg_last_xact_replay_timestamp()` would call lag), yet the standby holds
    everything: it keeps serving."""
    usage = _usage(hub)
    await until(usage, lambda a: a.headers[HEADER] == "standby", "the standby serves")
    older = f"interval '{4 * float(MAX_LAG)} seconds'"
    idle = f"SELECT coalesce(clock_timestamp() - pg_last_xact_replay_timestamp() > {older}, true)"
    async with asyncio.timeout(PATIENCE):
        while True:
            if await _on_standby(hub.pair, idle):
                break
            await asyncio.sleep(0.1)
    answer = await usage()
    assert answer.status_code == 200, answer.text
    assert answer.headers[HEADER] == "standby"


async def test_the_archive_files_a_closed_month_on_the_primary_then_reads_the_standby(
    hub: Hub,
) -> None:
    """A closed month's first fetch stores its files: a write, so the primary does it (on a
    standby it would fail: read-only); once replayed, the stored bytes come from the standby."""
    month = period_text(previous_period(hub.period))
    closed = await hub.client.post(
        f"/v1/billing/{month}/close", headers=bearer(await _operator_key(hub))
    )
    assert closed.status_code == 200, closed.text
    archive = f"/v1/tenants/510000/archive/{month}.xlsx"

    async def fetch() -> httpx.Response:
        return await hub.client.get(archive, headers=bearer(hub.province_key))

    # The close has reached the standby when the standby serves the statement.
    statement = f"/v1/billing/{month}/statement.csv"

    async def statement_csv() -> httpx.Response:
        return await hub.client.get(statement, headers=bearer(hub.province_key))

    await until(statement_csv, lambda a: a.headers[HEADER] == "standby", "statement on standby")
    first = await fetch()
    assert first.status_code == 200, first.text
    assert first.headers["X-Archive-Final"] == "true"
    assert first.headers[HEADER] == "primary"
    again = await until(fetch, lambda a: a.headers[HEADER] == "standby", "archive on standby")
    assert again.content == first.content
    assert again.headers["X-Archive-Final"] == "true"


async def _operator_key(hub: Hub) -> str:
    conn = await asyncpg.connect(hub.pair.primary.dsn("hub"))
    try:
        return await make_key(conn, "000000")
    finally:
        await conn.close()


async def test_reads_go_to_the_primary_while_the_standby_is_down(hub: Hub) -> None:
    overview = _overview(hub)
    await until(overview, lambda a: a.headers[HEADER] == "standby", "the standby serves")
    await asyncio.to_thread(hub.pair.stop, hub.pair.standby)
    try:
        await _set_limit(hub, "510100", 34_567)
        # No answer fails meanwhile (until() checks each is a 200).
        await until(overview, _shows("primary", 34_567), "the primary serves")
        metrics = await hub.client.get("/metrics")
        assert 'hub_reads_total{reason="unreachable",side="primary"}' in metrics.text
    finally:
        await asyncio.to_thread(hub.pair.start, hub.pair.standby)
    await until(overview, _shows("standby", 34_567), "the standby serves again")
