"""The operator commands against a real database (HUB_DB__DSN set)."""

from __future__ import annotations

import asyncpg
import pytest

from tenants.service import authenticate
from tests.e2e.conftest import clean_env, key_from, run_hub

pytestmark = pytest.mark.e2e


async def test_import_province_then_rerun(fresh_db: str) -> None:
    env = clean_env(HUB_DB__DSN=fresh_db)
    first = run_hub("tenants", "import", "--province", "51", env=env)
    assert first.returncode == 0, first.stderr
    assert "510000 四川省: 205 divisions, 205 new" in first.stdout
    assert "created: 1 province, 21 prefecture, 183 county" in first.stdout

    again = run_hub("tenants", "import", "--province", "51", env=env)
    assert again.returncode == 0, again.stderr
    assert "created: 0 province, 0 prefecture, 0 county" in again.stdout

    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM tenants") == 206
        logged = await conn.fetch(
            "SELECT actor, action, detail FROM operation_log WHERE action = 'tenant.import'"
        )
    finally:
        await conn.close()
    assert [r["actor"].startswith("cli:") for r in logged] == [True, True]
    assert '"province": "51"' in logged[0]["detail"]


async def test_import_stops_at_a_tenant_under_another_parent(fresh_db: str) -> None:
    """A division's code held elsewhere in the tree (here 青羊区's, moved under 锦江区): the
    import names it, exits 1 and writes nothing."""
    env = clean_env(HUB_DB__DSN=fresh_db)
    assert run_hub("tenants", "import", "--province", "51", env=env).returncode == 0
    conn = await asyncpg.connect(fresh_db)
    try:
        await conn.execute("DELETE FROM tenants WHERE code = '510107'")
        await conn.execute(
            "UPDATE tenants t SET parent_id = p.id, path = p.path || t.code || '/', "
            "depth = p.depth + 1, level = 'unit' "
            "FROM tenants p WHERE t.code = '510105' AND p.code = '510104'"
        )
        again = run_hub("tenants", "import", "--province", "51", env=env)
        assert again.returncode == 1, again.stdout
        assert "error: 1 code(s) to import are held by tenants elsewhere" in again.stdout
        assert "510105 青羊区: the division is a county under 510100" in again.stdout
        assert "sits under 510104" in again.stdout
        assert "Traceback" not in again.stderr
        assert await conn.fetchval("SELECT count(*) FROM tenants WHERE code = '510107'") == 0
    finally:
        await conn.close()


async def test_keys_create_bootstraps_any_tenant(fresh_db: str) -> None:
    env = clean_env(HUB_DB__DSN=fresh_db)
    assert run_hub("tenants", "import", "--province", "51", env=env).returncode == 0
    result = run_hub(
        "keys",
        "create",
        "--tenant",
        "510104",
        "--scope",
        "tenants:read",
        "--scope",
        "messages:write",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    key = key_from(result.stdout)
    conn = await asyncpg.connect(fresh_db)
    try:
        principal = await authenticate(conn, key)
        entry = await conn.fetchrow(
            "SELECT actor, object, after FROM operation_log WHERE action = 'key.create'"
        )
    finally:
        await conn.close()
    assert entry is not None
    assert entry["actor"].startswith("cli:")
    assert entry["object"] == f"key:{key.split('_')[1]}"
    assert key not in entry["after"]  # the name and scopes, never the secret
    assert principal is not None
    assert principal.tenant_code == "510104"
    assert sorted(principal.scopes) == ["messages:write", "tenants:read"]


async def test_keys_create_all_and_errors(fresh_db: str) -> None:
    env = clean_env(HUB_DB__DSN=fresh_db)
    root = run_hub("keys", "create", "--tenant", "000000", "--scope", "all", env=env)
    assert root.returncode == 0, root.stderr
    assert "dashboard:read" in root.stdout

    unknown_scope = run_hub("keys", "create", "--tenant", "000000", "--scope", "god", env=env)
    assert unknown_scope.returncode == 2
    assert "god" in unknown_scope.stdout

    unknown_tenant = run_hub("keys", "create", "--tenant", "519999", "--scope", "all", env=env)
    assert unknown_tenant.returncode == 1
    assert "519999" in unknown_tenant.stdout


def test_unknown_province_is_an_error(fresh_db: str) -> None:
    result = run_hub("tenants", "import", "--province", "99", env=clean_env(HUB_DB__DSN=fresh_db))
    assert result.returncode == 2
    assert "no province with code '99'" in result.stdout
