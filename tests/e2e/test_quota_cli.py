"""Operator quota commands against a real database."""

from __future__ import annotations

import asyncpg
import pytest

from tests.e2e.conftest import clean_env, run_hub

pytestmark = pytest.mark.e2e


async def test_set_default_and_audit(fresh_db: str) -> None:
    env = clean_env(HUB_DB__DSN=fresh_db)
    assert run_hub("tenants", "import", "--province", "51", env=env).returncode == 0

    root = run_hub(
        "quota",
        "set",
        "--tenant",
        "000000",
        "--period",
        "2026-11",
        "--limit",
        "100000",
        "--policy",
        "pooled",
        env=env,
    )
    assert root.returncode == 0, root.stdout + root.stderr
    assert "limit 100000, policy pooled" in root.stdout

    over = run_hub(
        "quota", "set", "--tenant", "510000", "--period", "2026-11", "--limit", "100001", env=env
    )
    assert over.returncode == 0  # the root is pooled: its children may be oversubscribed

    too_low = run_hub(
        "quota", "set", "--tenant", "000000", "--period", "2026-11", "--policy", "strict", env=env
    )
    assert too_low.returncode == 1  # strict would need room for the 100001 it granted
    assert "error:" in too_low.stdout

    default = run_hub("quota", "default", "--tenant", "510104", "--limit", "500", env=env)
    assert default.returncode == 0
    assert "510104 opens each month with limit 500" in default.stdout

    clean = run_hub("audit", "quota", "--period", "2026-11", env=env)
    assert clean.returncode == 0, clean.stdout
    assert "audited 2 accounts for 2026-11: clean" in clean.stdout

    conn = await asyncpg.connect(fresh_db)
    try:
        await conn.execute(
            "UPDATE quota_accounts SET reserved = reserved + 1 "
            "WHERE tenant_id = (SELECT id FROM tenants WHERE code = '510000')"
        )
    finally:
        await conn.close()
    tampered = run_hub("audit", "quota", "--period", "2026-11", env=env)
    assert tampered.returncode == 1
    assert "MISMATCH 510000" in tampered.stdout


def test_bad_period_is_a_usage_error(fresh_db: str) -> None:
    result = run_hub("audit", "quota", "--period", "2026-13", env=clean_env(HUB_DB__DSN=fresh_db))
    assert result.returncode == 2
    assert "not a month" in result.stderr
