"""The event loops: `hub worker`'s (HUB_WORKER__EVENT_LOOP, hub.worker.run) and the API's, `hub
serve` and `hub up` (HUB_HTTP__EVENT_LOOP, uvicorn's loop: hub.cli.api_loop)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest
import uvicorn
import uvloop

from hub import worker
from hub.cli import api_loop
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


def api_loop_type(loop: str) -> type[asyncio.AbstractEventLoop]:
    """The loop uvicorn runs the app on, given `loop` as `hub serve` gives it."""
    factory = uvicorn.Config(app="hub.cli:serve_app", loop=loop).get_loop_factory()
    assert factory is not None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(loop_type())


def test_the_api_runs_on_uvloop_where_installed() -> None:
    settings = load_settings({})
    assert settings.http.event_loop is None
    assert issubclass(api_loop_type(api_loop(settings)), uvloop.Loop)


def test_the_api_may_run_on_asyncio() -> None:
    settings = load_settings({"HUB_HTTP__EVENT_LOOP": "asyncio"})
    assert api_loop(settings) == "asyncio"
    assert not issubclass(api_loop_type(api_loop(settings)), uvloop.Loop)


def test_the_api_on_uvloop_not_installed_is_a_start_up_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert api_loop(load_settings({})) == "asyncio"
    with pytest.raises(RuntimeError, match="HUB_HTTP__EVENT_LOOP=uvloop: uvloop is not installed"):
        api_loop(load_settings({"HUB_HTTP__EVENT_LOOP": "uvloop"}))
    with pytest.raises(SettingsError, match="HUB_HTTP__EVENT_LOOP"):
        load_settings({"HUB_HTTP__EVENT_LOOP": "trio"})
