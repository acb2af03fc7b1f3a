"""The event loops (hub.loops): `hub worker`'s (HUB_WORKER__EVENT_LOOP, hub.worker.run) and the
API's in `hub serve` and `hub up` (HUB_HTTP__EVENT_LOOP, hub.cli.run_api)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys

import pytest
import uvloop

from hub import cli, embedded, worker
from hub.settings import Settings, SettingsError, load_settings


async def loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop not installed, or a build that cannot be imported: `import uvloop` fails."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


def processes_loop(settings: Settings) -> type[asyncio.AbstractEventLoop]:
    """The loop each of several `hub serve` processes runs the API on (uvicorn builds it)."""
    factory = cli.processes_config(settings, "127.0.0.1", 0).get_loop_factory()
    assert factory is not None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(loop_type())


def test_uvloop_is_the_default_where_installed() -> None:
    settings = load_settings({})
    assert settings.worker.event_loop is None
    assert settings.http.event_loop is None
    assert worker.event_loop(settings) == cli.api_loop(settings) == "uvloop"
    assert worker.run(loop_type(), settings) is uvloop.Loop
    assert cli.run_api(loop_type(), settings) is uvloop.Loop
    assert issubclass(processes_loop(settings), uvloop.Loop)


def test_asyncio_can_be_chosen() -> None:
    settings = load_settings(
        {"HUB_WORKER__EVENT_LOOP": "asyncio", "HUB_HTTP__EVENT_LOOP": "asyncio"}
    )
    assert worker.event_loop(settings) == cli.api_loop(settings) == "asyncio"
    assert not issubclass(worker.run(loop_type(), settings), uvloop.Loop)
    assert not issubclass(cli.run_api(loop_type(), settings), uvloop.Loop)
    assert not issubclass(processes_loop(settings), uvloop.Loop)


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
    levels = {name: logging.getLogger(name).level for name in ("hub", "arq")}
    try:
        assert cli.main([command]) == 2
    finally:  # main sets them for the process
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    assert f"hub: {setting}=uvloop: uvloop is not installed" in capsys.readouterr().err
    assert started == []  # no server was started for it


@pytest.mark.parametrize("setting", ["HUB_WORKER__EVENT_LOOP", "HUB_HTTP__EVENT_LOOP"])
def test_another_loop_is_refused(setting: str) -> None:
    with pytest.raises(SettingsError, match=setting):
        load_settings({setting: "trio"})
