"""The event loops (hub.loops): `hub worker`'s (HUB_WORKER__EVENT_LOOP, hub.worker.run) and the
API's in `hub serve` and `hub up` (HUB_HTTP__EVENT_LOOP, hub.cli.run_api)."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sys

import pytest
import uvloop

from hub import cli, embedded, loops, worker
from hub.settings import SettingsError, load_settings


async def loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop as good as not installed."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)


def test_uvloop_is_the_default_where_installed() -> None:
    settings = load_settings({})
    assert settings.worker.event_loop is None
    assert settings.http.event_loop is None
    assert worker.event_loop(settings) == cli.api_loop(settings) == "uvloop"
    assert worker.run(loop_type(), settings) is uvloop.Loop
    assert cli.run_api(loop_type(), settings) is uvloop.Loop


def test_asyncio_can_be_chosen() -> None:
    settings = load_settings(
        {"HUB_WORKER__EVENT_LOOP": "asyncio", "HUB_HTTP__EVENT_LOOP": "asyncio"}
    )
    assert worker.event_loop(settings) == cli.api_loop(settings) == "asyncio"
    assert not issubclass(worker.run(loop_type(), settings), uvloop.Loop)
    assert not issubclass(cli.run_api(loop_type(), settings), uvloop.Loop)


@pytest.mark.usefixtures("no_uvloop")
def test_asyncio_is_the_default_without_uvloop() -> None:
    settings = load_settings({})
    assert worker.event_loop(settings) == cli.api_loop(settings) == "asyncio"
    assert not issubclass(cli.run_api(loop_type(), settings), uvloop.Loop)


@pytest.mark.usefixtures("no_uvloop")
@pytest.mark.parametrize("setting", ["HUB_WORKER__EVENT_LOOP", "HUB_HTTP__EVENT_LOOP"])
def test_uvloop_chosen_and_missing_is_a_configuration_error(setting: str) -> None:
    settings = load_settings({setting: "uvloop"})
    run = worker.run if setting.startswith("HUB_WORKER") else cli.run_api
    main = loop_type()
    with pytest.raises(SettingsError, match=f"{setting}=uvloop: uvloop is not installed"):
        run(main, settings)
    assert inspect.getcoroutinestate(main) == inspect.CORO_CLOSED  # never left unawaited


def test_uvloop_that_cannot_be_imported_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # found, but `import uvloop` fails
    main = loop_type()
    with pytest.raises(SettingsError, match="uvloop cannot be imported"):
        loops.run(main, "uvloop")
    assert inspect.getcoroutinestate(main) == inspect.CORO_CLOSED


@pytest.mark.usefixtures("no_uvloop")
@pytest.mark.parametrize(
    ("command", "setting"),
    [
        ("serve", "HUB_HTTP__EVENT_LOOP"),
        ("up", "HUB_HTTP__EVENT_LOOP"),
        ("worker", "HUB_WORKER__EVENT_LOOP"),
    ],
)
def test_a_command_on_a_loop_that_cannot_run_says_so_before_starting(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    setting: str,
) -> None:
    monkeypatch.setenv(setting, "uvloop")
    started: list[str] = []
    monkeypatch.setattr(embedded, "servers", lambda *a, **k: started.append("servers"))
    assert cli.main([command]) == 2
    assert f"hub: {setting}=uvloop: uvloop is not installed" in capsys.readouterr().err
    assert started == []  # no server was started for it


@pytest.mark.parametrize("setting", ["HUB_WORKER__EVENT_LOOP", "HUB_HTTP__EVENT_LOOP"])
def test_another_loop_is_refused(setting: str) -> None:
    with pytest.raises(SettingsError, match=setting):
        load_settings({setting: "trio"})
