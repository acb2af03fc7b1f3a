"""`hub users create`: the operator's first admin, with a password on stdin or a one-time link."""

from __future__ import annotations

import subprocess

import asyncpg

from tests.e2e.conftest import HUB, clean_env


def _hub(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HUB, *args], env=env, input=stdin, capture_output=True, text=True, timeout=300
    )


async def test_users_create_makes_the_operators_first_admin(fresh_db: str) -> None:
    env = clean_env(HUB_DB__DSN=fresh_db)
    made = _hub(
        "users",
        "create",
        "--tenant",
        "000000",
        "--role",
        "管理,发送",
        "--role",
        "财务",
        "--login",
        "admin",
        "--phone",
        "13800138000",
        env=env,
        stdin="a long passphrase\n",
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert "user admin of 000000" in made.stdout
    invited = _hub(
        "users",
        "create",
        "--tenant",
        "000000",
        "--role",
        "查看",
        "--login",
        "viewer",
        "--phone",
        "13900139000",
        "--invite",
        "--url",
        "https://hub.example",
        env=env,
    )
    assert invited.returncode == 0, invited.stdout + invited.stderr
    assert "https://hub.example/dashboard/invite/" in invited.stdout
    weak = _hub(
        "users",
        "create",
        "--tenant",
        "000000",
        "--role",
        "管理",
        "--login",
        "weak",
        "--phone",
        "13700137000",
        env=env,
        stdin="short\n",
    )
    assert weak.returncode == 1
    assert "密码至少" in weak.stdout
    bad_role = _hub(
        "users",
        "create",
        "--tenant",
        "000000",
        "--role",
        "老板",
        "--login",
        "x.y",
        "--phone",
        "13700137000",
        env=env,
    )
    assert bad_role.returncode == 2
    assert "unknown role" in bad_role.stdout
    conn = await asyncpg.connect(fresh_db)
    try:
        rows = await conn.fetch("SELECT login, roles, password_hash FROM users ORDER BY id")
        logged = await conn.fetch(
            "SELECT actor, object, after::text FROM operation_log WHERE action = 'user.create'"
            " ORDER BY id"
        )
    finally:
        await conn.close()
    assert [r["object"] for r in logged] == ["user:admin", "user:viewer"]
    assert all(r["actor"].startswith("cli:") and "argon2" not in r["after"] for r in logged)
    assert [(r["login"], r["roles"]) for r in rows] == [
        ("admin", ["发送", "管理", "财务"]),
        ("viewer", ["查看"]),
    ]
    assert rows[0]["password_hash"].startswith("$argon2id$")
    assert rows[1]["password_hash"] is None


async def test_outbox_shows_what_the_outbox_gateway_took_newest_first(fresh_db: str) -> None:
    """Where a newcomer without a carrier reads the console's sign-in code."""
    conn = await asyncpg.connect(fresh_db)
    try:
        for n, (phone, text) in enumerate(
            [
                ("+8613800138000", "旧的验证码"),
                ("+8613900139000", "别人的"),
                ("+8613800138000", "新的验证码"),
            ]
        ):
            await conn.execute(
                "INSERT INTO outbox (message_id, gateway, phone, sender, text, segments,"
                " created_at) VALUES ($1::int, 'outbox', $2, '10690000', $3, 1,"
                " '2027-03-16 02:00:00+00'::timestamptz + make_interval(mins => $1::int))",
                n + 1,
                phone,
                text,
            )
    finally:
        await conn.close()
    env = clean_env(HUB_DB__DSN=fresh_db)
    shown = _hub("outbox", "--phone", "138 0013 8000", "--last", "5", env=env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split("  ")[1:] for line in lines] == [
        ["+8613800138000", "新的验证码"],
        ["+8613800138000", "旧的验证码"],
    ]
    assert lines[0].startswith("2027-03-16 10:03")  # Beijing time
    assert _hub("outbox", "--phone", "12345", env=env).returncode == 2
