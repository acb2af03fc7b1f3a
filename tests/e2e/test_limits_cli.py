"""The operator's `hub limits` commands against a real database, read back by a real app."""

from __future__ import annotations

import asyncpg
import pytest

from hub.limits import service as limits
from hub.settings import LimitsSettings
from tenants.service import get_by_code
from tests.e2e.conftest import clean_env, run_hub

pytestmark = pytest.mark.e2e


async def test_set_show_and_drop_a_tenants_limits(fresh_db: str) -> None:
    env = clean_env(HUB_DB__DSN=fresh_db)
    assert run_hub("tenants", "import", "--province", "51", env=env).returncode == 0

    lifted = run_hub(
        "limits",
        "set",
        "--tenant",
        "510000",
        "--tenant-rate",
        "200",
        "--tenant-burst",
        "3000",
        env=env,
    )
    assert lifted.returncode == 0, lifted.stdout + lifted.stderr
    assert "510000: each key 20/s (burst 300), the tenant 200/s (burst 3000)" in lifted.stdout
    assert "its own: tenant_rate, tenant_burst" in lifted.stdout

    # What every API process will read (HUB_LIMITS__REFRESH_SECONDS later).
    conn = await asyncpg.connect(fresh_db)
    try:
        province = await get_by_code(conn, "510000")
        assert province is not None
        view = await limits.limits_of(conn, province, LimitsSettings())
        assert (view.tenant_rate, view.tenant_burst, view.key_rate) == (200, 3000, 20)
    finally:
        await conn.close()

    shown = run_hub("limits", "show", "--tenant", "510000", env=env)
    assert "the tenant 200/s" in shown.stdout

    dropped = run_hub("limits", "set", "--tenant", "510000", "--default", env=env)
    assert "its own: none: the defaults" in dropped.stdout
    conn = await asyncpg.connect(fresh_db)
    try:
        logged = await conn.fetch(
            "SELECT action, actor FROM operation_log WHERE action LIKE 'limits.%' ORDER BY id"
        )
    finally:
        await conn.close()
    assert [r["action"] for r in logged] == ["limits.set", "limits.clear"]
    assert all(r["actor"].startswith("cli:") for r in logged)

    nonsense = run_hub("limits", "set", "--tenant", "510000", "--key-rate", "0", env=env)
    assert nonsense.returncode == 2
    assert "error:" in nonsense.stdout
    unknown = run_hub("limits", "show", "--tenant", "999999", env=env)
    assert unknown.returncode == 1
