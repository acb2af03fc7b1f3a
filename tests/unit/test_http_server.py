"""The deadline and size cap for a request's head, and the JSON shape of uvicorn's own refusals
(hub.http_server): a real uvicorn server on a socket, a tiny ASGI app behind the protocol the
API runs on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from hub import cli, http_server
from hub.http_server import ApiConfig, GuardedProtocol
from hub.settings import load_settings

HEAD_TIMEOUT = 0.3
MAX_HEAD = 16_384
BIG = 64 << 20
PATIENCE = 30.0  # how long the test waits for an answer at most: not what it asserts


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers 200 with its path and the length of the body it read (`/early`: none); `/slow`
    after twice the head timeout; `/big` with BIG bytes, a mebibyte at a time."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/big":
        headers = [(b"content-length", str(BIG).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(BIG >> 20):
            await send({"type": "http.response.body", "body": b"b" * (1 << 20), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(2 * HEAD_TIMEOUT)
    read, more = 0, scope["path"] != "/early"
    while more:
        message = await receive()
        read, more = read + len(message.get("body", b"")), message.get("more_body", False)
    body = f"{scope['path']} {read}".encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    config = ApiConfig(
        app,
        head_timeout=HEAD_TIMEOUT,
        max_head_bytes=MAX_HEAD,
        host="127.0.0.1",
        port=0,
        timeout_keep_alive=1,
        log_level="warning",
        loop="none",
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


def request(path: str, body: bytes = b"", padding: int = 0) -> bytes:
    """A POST of `body`, its head `padding` bytes longer than it needs to be."""
    head = f"POST {path} HTTP/1.1\r\nHost: hub\r\nContent-Length: {len(body)}\r\n"
    return f"{head}X-Pad: {'p' * padding}\r\n\r\n".encode() + body


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
    assert await answer(reader) == (200, b"/first 0")
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
    assert await answer(reader) == (200, b"/slow 0")
    assert await answer(reader) == (200, b"/next 0")
    writer.close()


async def test_a_head_past_the_cap_is_431_and_closed_however_it_comes(port: int) -> None:
    """All at once, or a header value streamed without end (httptools would gather it all)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("/big", padding=MAX_HEAD))
    status, body = await answer(reader)
    assert status == 431
    assert json.loads(body) == {
        "error": "too_large",
        "detail": f"the request's line and headers exceed {MAX_HEAD} bytes",
        "limit_bytes": MAX_HEAD,
    }
    assert await closed(reader)
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: hub\r\nX-Endless: ")

    async def stream() -> None:
        while True:
            writer.write(b"v" * 4096)
            await writer.drain()

    streaming = asyncio.create_task(stream())
    try:
        assert (await answer(reader))[0] == 431
    finally:
        streaming.cancel()
        writer.close()


async def test_a_head_under_the_cap_with_a_large_body_is_served_whole(port: int) -> None:
    """Only the head counts: a body of many reads after a head near the cap, in one write."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b"b" * 2_000_000
    writer.write(request("/upload", body, padding=MAX_HEAD - 200))
    assert await answer(reader) == (200, f"/upload {len(body)}".encode())
    writer.write(request("/again"))  # and the connection goes on
    assert await answer(reader) == (200, b"/again 0")
    writer.close()


async def test_a_malformed_request_is_400_in_the_json_shape(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: hub\r\nBad Header\x00: x\r\n\r\n")
    status, body = await answer(reader)
    assert status == 400
    assert json.loads(body)["error"] == "malformed"
    assert await closed(reader)
    writer.close()


def test_both_ways_of_serving_use_the_head_limits_from_the_settings() -> None:
    settings = load_settings(
        {"HUB_HTTP__HEAD_TIMEOUT_SECONDS": "2.5", "HUB_HTTP__MAX_HEAD_BYTES": "20000"}
    )
    single = cli.api_config(settings, "hub.cli:serve_app", "127.0.0.1", 0, loop="none")
    several = cli.processes_config(settings, "127.0.0.1", 0)
    # The processes' config is pickled to each process (spawn): it keeps its deadline.
    several = pickle.loads(pickle.dumps(several))
    for config in (single, several):
        assert isinstance(config, ApiConfig)
        assert (config.head_timeout, config.max_head_bytes) == (2.5, 20_000)
        assert config.http is GuardedProtocol


@pytest.mark.parametrize("shape", ["endless value", "many fields"])
async def test_trailers_past_the_cap_end_the_connection(port: int, shape: str) -> None:
    """Fields after a chunked body's last chunk, which httptools gathers as it does a head's
    (and would for ever: the app is still waiting for the body's end, and no deadline runs)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /reads HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"5\r\nhello\r\n0\r\n")  # the app waits for the end of the body
    if shape == "endless value":
        tail = b"X-Endless: " + b"v" * 4 * MAX_HEAD
    else:
        tail = b"".join(b"X-%d: a\r\n" % n for n in range(MAX_HEAD // 2))
    for start in range(0, len(tail), 4096):  # four times the cap, and no end of the fields
        writer.write(tail[start : start + 4096])
        await asyncio.sleep(0)
    try:
        with contextlib.suppress(ConnectionError):  # cut with the client's bytes unread
            assert await closed(reader)  # else it would wait out PATIENCE, still reading
    finally:
        writer.close()


async def test_a_long_chunked_body_in_small_chunks_is_served_whole(port: int) -> None:
    """Chunk sizes are framing between body bytes, not a tail to cap."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /chunks HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(20_000):
        writer.write(b"1\r\nx\r\n")
    writer.write(b"0\r\nX-Trailer: fine\r\n\r\n")
    assert await answer(reader) == (200, b"/chunks 20000")
    writer.close()


async def test_a_request_answered_before_its_body_ends_ends_its_connection(port: int) -> None:
    """A body announced as a gigabyte and trickled after the answer: each byte would stop the
    keep-alive timer, holding the connection for as long as the client liked."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /early HTTP/1.1\r\nHost: hub\r\nContent-Length: 1000000000\r\n\r\nb")
    assert await answer(reader) == (200, b"/early 0")

    async def trickle() -> None:
        while True:
            writer.write(b"b")
            await asyncio.sleep(0.2)  # well inside the keep-alive timeout (1 s here)

    trickling = asyncio.create_task(trickle())
    try:
        with contextlib.suppress(ConnectionError):
            assert await closed(reader)
    finally:
        trickling.cancel()
        writer.close()


async def test_a_pipelined_request_whose_body_comes_late_is_served(port: int) -> None:
    """The request answered is not the one still reading its body: nothing ends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        request("/slow") + b"POST /late HTTP/1.1\r\nHost: hub\r\nContent-Length: 10\r\n\r\n12345"
    )
    assert await answer(reader) == (200, b"/slow 0")
    writer.write(b"67890")
    assert await answer(reader) == (200, b"/late 10")
    writer.close()


async def test_an_upload_answered_early_still_gets_its_answer(port: int) -> None:
    """A client still sending a large body after the answer (a send refused 429, say) is read
    and dropped until it pauses: closing with its bytes unread would reset the connection
    before it read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /early HTTP/1.1\r\nHost: hub\r\nContent-Length: 4000000\r\n\r\n")
    for _ in range(20):  # 4 MB over about 3 s, longer than the idle wait
        writer.write(b"b" * 200_000)
        await writer.drain()
        await asyncio.sleep(0.15)
    assert await answer(reader) == (200, b"/early 0")
    assert await closed(reader)
    writer.close()


async def test_a_refused_client_that_never_stops_sending_is_cut_off(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lingering close drops what still comes only up to LINGER_MAX_BYTES (here 1 MiB): a
    client streaming without a pause would otherwise make the process read and drop all it
    sends for LINGER_MAX_SECONDS (100 GB once, over loopback)."""
    monkeypatch.setattr(http_server, "LINGER_MAX_BYTES", 1 << 20)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /early HTTP/1.1\r\nHost: hub\r\nContent-Length: 1000000000\r\n\r\n")
    assert await answer(reader) == (200, b"/early 0")
    sent, block = 0, b"b" * 65_536
    with contextlib.suppress(ConnectionError):
        while sent < 64 << 20:  # 64 times the cap, without a pause
            writer.write(block)
            await asyncio.wait_for(writer.drain(), PATIENCE)
            sent += len(block)
    assert sent < 64 << 20  # the server closed long before: the writes failed
    writer.close()


async def test_an_answer_the_client_stops_reading_is_cut_off(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn waits for ever on a client that reads nothing of its answer (a stalled download
    holds its unit's slot and its file): past SEND_TIMEOUT_SECONDS (here 0.3 s) without its
    answer draining, the connection is aborted, and the client gets only what was in flight."""
    monkeypatch.setattr(http_server, "SEND_TIMEOUT_SECONDS", 0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(b"GET /big HTTP/1.1\r\nHost: hub\r\n\r\n")
    await asyncio.sleep(2)  # reading nothing, long past the deadline
    received = 0
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(1 << 20), PATIENCE):
            received += len(chunk)
    assert received < BIG  # cut off: the rest never came
    writer.close()
