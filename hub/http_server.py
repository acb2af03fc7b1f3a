"""uvicorn as the API runs it: httptools' parser, with a deadline and a size cap for each
request's head, and its own refusals in the JSON error shape.

uvicorn times out neither a connection that sends nothing nor one that sends its request line
and headers a byte at a time: its keep-alive timer runs only between requests and stops at the
first byte of the next one. Nor does it cap a head's size: httptools gathers a header's value
in memory however long it grows (a client streamed 94 MB into one in 10 s). So anyone who can
reach the port could hold connections, file descriptors and memory at will. Here:
- a connection has HUB_HTTP__HEAD_TIMEOUT_SECONDS from its opening, and each later request from
  its first byte, to send the whole head; then it is answered 408 `timeout` and closed;
- a head larger than HUB_HTTP__MAX_HEAD_BYTES (its line and headers, as parsed) is answered 431
  `too_large` and the connection closed, before the app sees it; one that keeps coming is cut
  off as soon as its reads pass the cap (so it holds at most one read, 256 KiB, more). The same
  cap holds for what follows a chunked body (trailer fields, which httptools gathers as it
  does headers, even after the app has answered): reads after the head that carry no body
  bytes add up, and past the cap the connection is cut;
- a request httptools cannot parse is answered 400 `malformed` in the JSON shape, as the app's
  own refusals are (uvicorn's is plain text).
- a request answered before its body ended (a 401, a 413, or a route that reads no body) ends
  its connection: uvicorn would keep it, and each byte of a body announced as a gigabyte would
  stop its keep-alive timer, holding the connection for as long as the client trickles.
Each refusal, and that end, closes the connection as nginx's lingering close does: the answer
and a FIN, then what the client still sends is read and dropped until it pauses for
LINGER_IDLE_SECONDS (at most LINGER_MAX_SECONDS, and at most LINGER_MAX_BYTES: a little over the
largest legal body) before the socket closes: closing with unread bytes would reset the
connection, and a client still uploading (a 40 MiB send refused 429) would lose the answer. (A
client streaming as fast as loopback allows once made a process drop 100 GB in those 30 s.)
An answer the client stops reading is cut off too: once what is written waits in the transport's
buffer (past its high-water mark) for SEND_TIMEOUT_SECONDS without draining below the low one,
the connection is aborted, as nginx's `send_timeout` does. uvicorn would wait for ever, and a
stalled download holds its unit's download slot and its file (hub.exports.files).
Behind nginx, its `client_header_timeout` and `large_client_header_buffers` come first. A body
that stops coming is the app's: HUB_HTTP__BODY_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("hub.http")

LINGER_IDLE_SECONDS = 2.0
LINGER_MAX_SECONDS = 30.0
LINGER_MAX_BYTES = 48 << 20  # the largest legal body is a send's 40 MiB
SEND_TIMEOUT_SECONDS = 60.0  # nginx's send_timeout
REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}


def refusal(status: int, body: dict[str, Any]) -> bytes:
    """A whole HTTP/1.1 answer in the JSON error shape, closing the connection."""
    content = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(content)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + content


LATE = refusal(408, {"error": "timeout", "detail": "the request's head did not arrive in time"})


class ApiConfig(uvicorn.Config):
    """uvicorn's settings with the head's deadline (seconds) and size cap (bytes) for
    `GuardedProtocol`. A class of its own, not attributes set on uvicorn's, so they survive the
    pickling that hands it to each `hub serve` process."""

    def __init__(self, app: Any, *, head_timeout: float, max_head_bytes: int, **kw: Any) -> None:
        super().__init__(app, http=GuardedProtocol, **kw)
        self.head_timeout, self.max_head_bytes = head_timeout, max_head_bytes


class HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops parsing what is left of the read."""


class GuardedProtocol(HttpToolsProtocol):
    """httptools' protocol, refusing a late or oversized head and answering a malformed request
    in the JSON shape (module text)."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        assert isinstance(config, ApiConfig)
        self._head_seconds, self._max_head = config.head_timeout, config.max_head_bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None  # while the answer does not drain
        self._closing: asyncio.TimerHandle | None = None  # the lingering close's
        self._linger_until = 0.0
        self._dropped = 0  # bytes read and dropped since the refusal
        self._head_bytes = 0  # read of the head awaited, before the read being parsed
        self._heads = 0  # heads parsed on this connection
        self._refused = False  # answered with a refusal: what comes now is dropped
        self._in_body = False  # between a head and the end of its message
        self._body_bytes = 0  # body bytes parsed on this connection
        self._tail_bytes = 0  # bytes of the reads in a body that carried none of it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        self._drained()
        if self._closing is not None:
            self._closing.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._dropped += len(data)
            if self._dropped > LINGER_MAX_BYTES:
                self.transport.close()  # more than any upload it could still be finishing
            else:
                self._close_when_idle()  # dropped: the client is still sending
            return
        awaiting, heads, body = self._head_timer is not None, self._heads, self._body_bytes
        in_body = self._in_body
        super().data_received(data)
        if self._heads != heads or self.transport.is_closing():
            return  # a head ended in this read (a later one starts afresh)
        if awaiting:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._too_large()
        elif in_body and self._in_body:
            # Chunk sizes or trailers: a few bytes between body bytes, unless a client streams
            # fields after the last chunk.
            self._tail_bytes = self._tail_bytes + len(data) if self._body_bytes == body else 0
            if self._tail_bytes > self._max_head:
                # Its request is in the app, or answered: no answer of ours, only the end.
                self._refuse(b"", "over %d bytes after a body", self._max_head)

    def on_message_begin(self) -> None:
        self._await_head()  # from the connection's opening for its first request
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_arrived()
        self._heads += 1
        if len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) > self._max_head:
            self._too_large()
            raise HeadTooLarge  # the app never sees it; uvicorn's own 400 finds it answered
        self._in_body, self._tail_bytes = True, 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # The request answered is the one being read only when none waits behind it.
        last = not self.pipeline
        super().on_response_complete()
        if last and self._in_body and not self.transport.is_closing():
            self._refused = True
            self._linger()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(SEND_TIMEOUT_SECONDS, self._send_late)

    def resume_writing(self) -> None:
        self._drained()
        super().resume_writing()

    def _drained(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_late(self) -> None:
        self._send_timer = None
        log.info("cut off %s: its answer not read for %.0f s", self.client, SEND_TIMEOUT_SECONDS)
        self.transport.abort()

    def send_400_response(self, msg: str) -> None:
        self._refuse(refusal(400, {"error": "malformed", "detail": msg}), "%s", msg)

    def _await_head(self) -> None:
        if self._head_timer is None:
            self._head_bytes = 0
            self._head_timer = self.loop.call_later(self._head_seconds, self._head_late)

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_large(self) -> None:
        detail = f"the request's line and headers exceed {self._max_head} bytes"
        body = {"error": "too_large", "detail": detail, "limit_bytes": self._max_head}
        self._refuse(refusal(431, body), "over %d bytes of head", self._max_head)

    def _head_late(self) -> None:
        self._head_timer = None
        if self.flow.read_paused:  # uvicorn reads no more until an earlier answer is out
            self._await_head()
            return
        self._refuse(LATE, "a head not in after %.1f s", self._head_seconds)

    def _refuse(self, answer: bytes, why: str, *args: object) -> None:
        self._head_arrived()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        log.info("refused %s: " + why, self.client, *args)
        if not answer or (self.cycle is not None and not self.cycle.response_complete):
            self.transport.close()  # nothing to say, or an answer in flight not to cut into
            return
        self.transport.write(answer)
        self._linger()

    def _linger(self) -> None:
        """End what we send; drop what still comes (`_refused`) until it pauses, then close."""
        self._head_arrived()
        self._unset_keepalive_if_required()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_until = self.loop.time() + LINGER_MAX_SECONDS
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        if self._closing is not None:
            self._closing.cancel()
        at = min(self.loop.time() + LINGER_IDLE_SECONDS, self._linger_until)
        self._closing = self.loop.call_at(at, self.transport.close)
