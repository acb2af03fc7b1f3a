"""`hub up`'s watcher over its embedded servers (hub.embedded.Watcher), on stand-in servers:
the real ones are killed in tests/e2e/test_hub_up_servers_die.py."""

from __future__ import annotations

import threading
from typing import Any, cast

from hub.embedded import Watcher


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
        assert server.back.wait(5)
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
        assert reported.wait(10)
    finally:
        watcher.stop()
    assert server.restarts == 2
    assert lost == [
        "embedded PostgreSQL died and did not start again after 2 tries: "
        "RuntimeError: could not create lock file"
    ]
