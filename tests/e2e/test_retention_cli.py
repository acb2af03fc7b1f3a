"""`hub retention run [--dry-run]` on a real database: says what would go and changes nothing,
then erases it and logs the run."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from hub import calendar
from tests.e2e.conftest import clean_env, run_hub
from tests.factories import make_tenant

REPLY = (
    "INSERT INTO inbound (tenant_id, gateway, reference, phone, address, text, opt_out,"
    " received_at) VALUES ($1, 'outbox', $2, '+8613900139000', '10690000510000', '收到', false,"
    " $3)"
)


async def test_a_dry_run_says_what_would_go_and_a_real_run_erases_it(fresh_db: str) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        tenant = await make_tenant(conn, "510000", "四川省")
        now = calendar.now()
        await conn.execute(REPLY, tenant.id, "old", now - timedelta(days=181))
        await conn.execute(REPLY, tenant.id, "young", now - timedelta(days=179))
        phones = "SELECT reference, phone FROM inbound ORDER BY reference"
        before = await conn.fetch(phones)
        env = clean_env(HUB_DB__DSN=fresh_db)

        dry = run_hub("retention", "run", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        lines = dry.stdout.splitlines()
        assert "would go (dry run: nothing changed)" in lines[0]
        inbound = next(line for line in lines if line.startswith("inbound "))
        assert inbound.split()[-1] == "1"
        assert "phones and texts erased" in inbound
        assert any(line.split()[:1] == ["inbound"] for line in lines[lines.index("") :])
        assert await conn.fetch(phones) == before
        assert await conn.fetchval("SELECT count(*) FROM operation_log") == 0

        real = run_hub("retention", "run", env=env)
        assert real.returncode == 0, real.stdout + real.stderr
        assert [tuple(r) for r in await conn.fetch(phones)] == [
            ("old", ""),
            ("young", "+8613900139000"),
        ]
        actor = await conn.fetchval(
            "SELECT actor FROM operation_log WHERE action = 'retention.run'"
        )
        assert actor.startswith("cli:")
    finally:
        await conn.close()
