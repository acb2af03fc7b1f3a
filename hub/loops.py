"""The event loop a process runs on: uvloop where it is installed, unless a setting names one.

`hub worker` (HUB_WORKER__EVENT_LOOP, hub.worker.run) and the API (HUB_HTTP__EVENT_LOOP: `hub up`
and a single-process `hub serve` through hub.cli.run_api, several `hub serve` processes through
uvicorn's `loop`) choose with `chosen`. uvloop costs the worker about a quarter less CPU per SMPP
segment and the API about a tenth less per send (docs/BENCHMARKS.md, issue 17 points 2 and 5).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from hub.settings import EventLoop, SettingsError

T = TypeVar("T")


def _uvloop_imports() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def chosen(configured: EventLoop | None, setting: str) -> EventLoop:
    """The loop `setting` (its variable's name, for the error) names, else uvloop where it can
    be imported. uvloop named but not importable is a configuration error."""
    if configured is None:
        return "uvloop" if _uvloop_imports() else "asyncio"
    if configured == "uvloop" and not _uvloop_imports():
        raise SettingsError(f"{setting}=uvloop: uvloop is not installed (or cannot be imported)")
    return configured


def run(main: Coroutine[Any, Any, T], configured: EventLoop | None, setting: str) -> T:
    """Run `main` to its end, as `asyncio.run` does, on the loop `chosen` picks (closing `main`
    unrun when that is an error)."""
    try:
        loop = chosen(configured, setting)
    except SettingsError:
        main.close()
        raise
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
