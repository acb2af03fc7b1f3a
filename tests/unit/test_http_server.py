"""The deadline for a request's head (hub.http_server): a real uvicorn server on a socket, with
a tiny ASGI app in front of the protocol the API runs on."""

from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from hub import cli
from hub.http_server import ApiConfig, HeadDeadlineProtocol
from hub.settings import load_settings

HEAD_TIMEOUT = 0.3
PATIENCE = 30.0  # how long the test waits for an answer at most: not what it asserts


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers 200 with its path; `/slow` after twice the head timeout."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(2 * HEAD_TIMEOUT)
    body = scope["path"].encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    config = ApiConfig(
        app, head_timeout=HEAD_TIMEOUT, host="127.0.0.1", port=0, log_level="warning", loop="none"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn has no event for it
        await asyncio.sleep(0.01)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    await serving


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 answer: its status and body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    return status, await asyncio.wait_for(reader.readexactly(length), PATIENCE)


async def closed(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), PATIENCE) == b""


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: hub\r\n\r\n".encode()


async def test_a_connection_that_sends_nothing_is_answered_408_and_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    status, body = await answer(reader)
    assert status == 408
    assert json.loads(body)["error"] == "timeout"
    assert await closed(reader)
    writer.close()


async def test_a_head_trickled_a_byte_at_a_time_is_cut_off(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: hub\r\n")

    async def trickle() -> None:  # a header line a byte at a time, for as long as it takes
        for byte in b"X-Slow: 1\r\n" * 10_000:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.02)

    dripping = asyncio.create_task(trickle())
    try:
        status, _ = await answer(reader)
        assert status == 408
        assert await closed(reader)
    finally:
        dripping.cancel()
        writer.close()


async def test_a_later_request_on_a_kept_connection_has_its_own_deadline(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("/first"))
    assert await answer(reader) == (200, b"/first")
    writer.write(b"GET /second HTTP/1.1\r\n")  # and the rest never comes
    status, _ = await answer(reader)
    assert status == 408
    assert await closed(reader)
    writer.close()


async def test_a_slow_handler_or_a_pipelined_request_is_not_cut(port: int) -> None:
    """The deadline is for the head only: a handler taking longer than it answers in full, and
    requests sent together are each answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("/slow") + request("/next"))
    assert await answer(reader) == (200, b"/slow")
    assert await answer(reader) == (200, b"/next")
    writer.close()


def test_both_ways_of_serving_use_the_deadline_from_the_settings() -> None:
    settings = load_settings({"HUB_HTTP__HEAD_TIMEOUT_SECONDS": "2.5"})
    single = cli.api_config(settings, "hub.cli:serve_app", "127.0.0.1", 0, loop="none")
    several = cli.processes_config(settings, "127.0.0.1", 0)
    # The processes' config is pickled to each process (spawn): it keeps its deadline.
    several = pickle.loads(pickle.dumps(several))
    for config in (single, several):
        assert isinstance(config, ApiConfig)
        assert config.head_timeout == 2.5
        assert config.http is HeadDeadlineProtocol
