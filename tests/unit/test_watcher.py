"""`hub up`'s watcher over its embedded servers (hub.embedded.Watcher), on stand-in servers:
the real ones are killed in tests/e2e/test_hub_up_servers_die.py."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from hub.embedded import Watcher


def _within(seconds: float, event: threading.Event) -> bool:
    """`event.wait(seconds)` by polling: under libfaketime (CI's calendar runs) a timed
    Event.wait never times out (see Watcher), and a watcher that never ticks must fail this test,
    not hang it."""
    deadline = time.monotonic() + seconds
    while not event.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    return event.is_set()


class StandIn:
    def __init__(self, *, starts: bool) -> None:
        self.alive, self.starts, self.restarts = True, starts, 0
        self.back = threading.Event()

    def running(self) -> bool:
        return self.alive

    def restart(self) -> None:
        self.restarts += 1
        if not self.starts:
            raise RuntimeError("could not create lock file")
        self.alive = True
        self.back.set()


def test_a_dead_server_is_started_again() -> None:
    server = StandIn(starts=True)
    lost: list[str] = []
    watcher = Watcher({"Valkey": cast(Any, server)}, lost.append, every=0.01)
    watcher.start()
    try:
        server.alive = False
        assert _within(5, server.back)
    finally:
        watcher.stop()
    assert (server.restarts, lost) == (1, [])


def test_one_that_will_not_start_is_reported_with_its_reason() -> None:
    server = StandIn(starts=False)
    reported = threading.Event()
    lost: list[str] = []

    def on_lost(reason: str) -> None:
        lost.append(reason)
        reported.set()

    watcher = Watcher({"PostgreSQL": cast(Any, server)}, on_lost, every=0.01, tries=2)
    watcher.start()
    try:
        server.alive = False
        assert _within(10, reported)
    finally:
        watcher.stop()
    assert server.restarts == 2
    assert lost == [
        "embedded PostgreSQL died and did not start again after 2 tries: "
        "RuntimeError: could not create lock file"
    ]


def test_stop_is_heard_within_a_long_wait() -> None:
    lost: list[str] = []
    watcher = Watcher({"Valkey": cast(Any, StandIn(starts=True))}, lost.append, every=3600)
    watcher.start()
    asked = time.monotonic()
    watcher.stop()
    assert time.monotonic() - asked < 1
    assert lost == []
