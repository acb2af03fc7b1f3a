"""What the API runs on besides its event loop (tests/unit/test_event_loops.py): uvicorn with
httptools' parser, and route guards that Litestar calls on the loop itself."""

from __future__ import annotations

import inspect

from litestar.routes import HTTPRoute
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hub import cli
from hub.app import create_app
from hub.settings import load_settings


def test_both_ways_of_serving_parse_http_with_httptools() -> None:
    settings = load_settings({})
    app = create_app(settings)
    single = cli.api_config(settings, app, "127.0.0.1", 0, loop="none")
    several = cli.processes_config(settings, "127.0.0.1", 0)
    assert single.http is several.http
    single.load()  # what uvicorn does first
    assert issubclass(single.http_protocol_class, HttpToolsProtocol)


def test_every_guard_is_a_coroutine_function() -> None:
    """Litestar runs a plain-function guard in its thread pool: a hand-off to a thread and back
    on every request of every route."""
    app = create_app(load_settings({}))
    guards = [
        guard
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        for guard in handler.resolve_guards()
    ]
    assert len(guards) > 50
    assert [g for g in guards if not inspect.iscoroutinefunction(g)] == []
