"""uvicorn as the API runs it: httptools' parser, with a deadline for each request's head.

uvicorn times out neither a connection that sends nothing nor one that sends its request line
and headers a byte at a time: its keep-alive timer runs only between requests and stops at the
first byte of the next one. So anyone who can reach the port could hold connections (and file
descriptors) for ever with a few bytes a minute. Here a connection has
HUB_HTTP__HEAD_TIMEOUT_SECONDS from its opening, and each later request from its first byte, to
send the whole head; then it is answered 408 `timeout` and closed. (Behind nginx, its
`client_header_timeout` does the same first; a body that stops coming is the app's:
HUB_HTTP__BODY_TIMEOUT_SECONDS.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("hub.http")


def _late_answer() -> bytes:
    body = json.dumps(
        {"error": "timeout", "detail": "the request's line and headers did not arrive in time"}
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


LATE_ANSWER = _late_answer()


class ApiConfig(uvicorn.Config):
    """uvicorn's settings with `head_timeout` (seconds) for `HeadDeadlineProtocol`. A class of
    its own, not an attribute set on uvicorn's, so it survives the pickling that hands it to
    each `hub serve` process."""

    def __init__(self, app: Any, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, http=HeadDeadlineProtocol, **kwargs)
        self.head_timeout = head_timeout


class HeadDeadlineProtocol(HttpToolsProtocol):
    """httptools' protocol, closing a connection whose request head is late (module text)."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._head_seconds: float = getattr(config, "head_timeout", 10.0)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._await_head()  # from the connection's opening for its first request
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_arrived()
        super().on_headers_complete()

    def _await_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_seconds, self._head_late)

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        log.info("a request head from %s took over %.1f s: closed", self.client, self._head_seconds)
        self.transport.write(LATE_ANSWER)
        self.transport.close()
