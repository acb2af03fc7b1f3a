"""`hub worker`'s event loop (HUB_WORKER__EVENT_LOOP, hub.worker.run)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest
import uvloop

from hub import worker
from hub.settings import SettingsError, load_settings


async def loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default_where_installed() -> None:
    settings = load_settings({})
    assert settings.worker.event_loop is None
    assert worker.event_loop(settings) == "uvloop"
    assert worker.run(loop_type(), settings) is uvloop.Loop


def test_asyncio_can_be_chosen() -> None:
    settings = load_settings({"HUB_WORKER__EVENT_LOOP": "asyncio"})
    assert worker.event_loop(settings) == "asyncio"
    assert not issubclass(worker.run(loop_type(), settings), uvloop.Loop)


def test_uvloop_chosen_and_missing_is_a_start_up_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert worker.event_loop(load_settings({})) == "asyncio"  # not installed: asyncio's
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import raises ImportError
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        worker.run(loop_type(), load_settings({"HUB_WORKER__EVENT_LOOP": "uvloop"}))


def test_another_loop_is_refused() -> None:
    with pytest.raises(SettingsError, match="HUB_WORKER__EVENT_LOOP"):
        load_settings({"HUB_WORKER__EVENT_LOOP": "trio"})
