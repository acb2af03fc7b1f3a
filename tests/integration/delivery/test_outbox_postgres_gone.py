"""The outbox gateway when PostgreSQL is gone: nothing handed over, so its messages go again.

Its table is the hub's own and its insert idempotent, so an outage is never an "outcome
unknown" (which would close a message the outbox never took as `sent` for good). Met while
restarting PostgreSQL under load (tests/e2e/test_postgres_restart.py); shown here on a real
PostgreSQL, stopped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.db import PoolDatabase, create_pool
from hub.delivery.gateway import Outbound
from hub.delivery.gateways import outbox
from hub.settings import GatewayConfig, load_settings
from tests.peers.pg_cluster import PgCluster


@pytest.mark.parametrize("stop", ["fast", "immediate"])
async def test_the_outbox_with_postgres_gone_says_nothing_was_handed_over(
    tmp_path: Path, stop: str
) -> None:
    cluster = PgCluster(tmp_path / "pg")
    cluster.init()
    cluster.start()
    try:
        settings = load_settings({"HUB_DB__DSN": cluster.dsn()})
        # Connections opened while it ran, then cut by its stop, then none to be had.
        db = PoolDatabase(await create_pool(settings.db, cluster.dsn()))
        try:
            gateway = outbox.build(GatewayConfig(name="outbox", kind="outbox"), db)
            cluster.stop(stop)
            message = Outbound(1, "+8613800138000", "【测试】你好", 1, "ucs2", "10690000100000")
            for _ in range(3):  # a pooled connection the stop cut, then a refused connect
                with pytest.raises(ConnectionError):
                    await gateway.submit([message])
        finally:
            await db.close()
    finally:
        cluster.cleanup()
