"""The event loop a process runs on: uvloop where it is installed, unless a setting names one.

`hub worker` (HUB_WORKER__EVENT_LOOP) and the API of `hub serve` and `hub up`
(HUB_HTTP__EVENT_LOOP) choose with `chosen` and run with `run`. uvloop costs the worker about a
third less CPU per SMPP segment and the API about a tenth less per send (docs/BENCHMARKS.md,
issue 17 points 2 and 5).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

from hub.settings import EventLoop, SettingsError

T = TypeVar("T")


def chosen(configured: EventLoop | None, setting: str) -> EventLoop:
    """The loop `setting` (its variable's name, for the error) names, else uvloop where it is
    installed. uvloop named but not installed is a configuration error."""
    installed = importlib.util.find_spec("uvloop") is not None
    if configured is None:
        return "uvloop" if installed else "asyncio"
    if configured == "uvloop" and not installed:
        raise SettingsError(f"{setting}=uvloop: uvloop is not installed")
    return configured


def run(main: Coroutine[Any, Any, T], loop: EventLoop) -> T:
    """Run `main` to its end on a new loop of the kind `loop` names (as `asyncio.run` does)."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError as exc:  # found but broken (another Python's build, say)
            main.close()
            raise SettingsError(f"uvloop cannot be imported: {exc}") from exc
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
