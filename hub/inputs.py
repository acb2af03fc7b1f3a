"""What the hub accepts as text, checked once for every route.

PostgreSQL text cannot hold NUL (asyncpg raises, which was a 500), and no other control character
is text a phone, a spreadsheet or a page can show. So every string that comes in — JSON bodies at
any depth (object keys too), forms, query and path parameters, headers, roster cells, gateway
callbacks — is refused with a 422 naming where it was, if it carries a control character other
than tab, line feed and carriage return (which an SMS body may hold). Fields that must be one line
(names, signatures, tags) still say so in their own patterns.

JSON nested deeper than msgspec can decode (it raises RecursionError, about a thousand levels) is
a 400; no body of the API is more than a few levels deep.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Iterator
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request
from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import InternalServerException
from litestar.types import ASGIApp, Receive, Scope, Send

from hub.db import in_turns
from hub.errors import BodyTimeout, ClientGone, Invalid, Malformed
from hub.settings import Settings
from tenants.schemas import CONTROL_CHARS

# C0 controls but tab, LF and CR; DEL; the C1 controls (U+0080 to U+009F).
CONTROL = re.compile(f"[{CONTROL_CHARS}]")
# The same in header bytes, which are Latin-1: 0x80 to 0x9F there are parts of UTF-8 text.
_HEADER_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A JSON text can carry a control character only as a raw DEL/C1 or as an escape (\b, \f,
# \u00XX); a body with none of these needs no walk. A match may be innocent (`\\u0000` is a
# backslash and text): the walk decides.
_MAYBE_CONTROL = re.compile(rb"\\[bf]|\\u00[0189]|\\u007[fF]|\x7f|\xc2[\x80-\x9f]")


def control_problem(text: str) -> str | None:
    """Why `text` is refused (naming the first control character), or None."""
    found = CONTROL.search(text)
    if found is None:
        return None
    return (
        f"contains the control character U+{ord(found[0]):04X} at position {found.start()}"
        " (only tab, line feed and carriage return are allowed)"
    )


def _strings(value: Any) -> Iterator[tuple[str, str]]:
    """(path, string) for every string in a decoded JSON value, object keys included.

    Iterative, so a deep value cannot exhaust the stack. Paths read `to[3]`, `vars.name`."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path or "body", item
        elif isinstance(item, dict):
            for key, child in item.items():
                # A bad key is refused here, before its value is visited under its name.
                yield f"{path or 'body'} (an object key)", key
                stack.append((f"{path}.{key}" if path else key, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(item))


def _refuse(key: str, source: str, problem: str) -> Invalid:
    return Invalid(f"{key}: {problem}", fields=[{"key": key, "message": problem, "source": source}])


async def check_json(raw: bytes, value: Any) -> None:
    """Refuse a decoded JSON body that holds a control character anywhere (422 naming it). A
    million-recipient send is walked in turns: other requests are served meanwhile."""
    if not _MAYBE_CONTROL.search(raw):
        return
    async for path, text in in_turns(_strings(value), every=10_000):
        if problem := control_problem(text):
            raise _refuse(path, "body", problem)


# What Litestar's Request.stream() says when the ASGI server reports `http.disconnect`
# (tests/integration/test_bad_input.py drives it).
_DISCONNECTED = "client disconnected prematurely"


# A body may take BODY_GRACE_SECONDS, and a second more for every BODY_MIN_RATE bytes it has sent
# (HubRequest.stream): a 40 MiB send needs 1 KiB/s on average, a trickle is cut.
BODY_GRACE_SECONDS = 10.0
BODY_MIN_RATE = 1024


class HubRequest(Request[Any, Any, Any]):
    """Every route's request: JSON and url-encoded form bodies are checked as they are read."""

    async def json(self) -> Any:
        try:
            value = await super().json()
        except RecursionError as exc:
            raise Malformed("request body is not valid JSON: nested too deeply") from exc
        await check_json(await self.body(), value)
        return value

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """The body as it comes; a client gone before its end (`http.disconnect`) is ClientGone,
        not Litestar's 500 (Litestar's other InternalServerException here, a body read twice,
        is our bug and stays a logged 500), and one whose body stops coming for
        HUB_HTTP__BODY_TIMEOUT_SECONDS, or comes slower than BODY_MIN_RATE bytes a second
        (its waits add up to more than BODY_GRACE_SECONDS plus a second per BODY_MIN_RATE
        bytes come: a byte every few seconds would hold the request for days; the time the
        handler spends between reads is not the client's), is BodyTimeout (408)."""
        settings: Settings = self.app.state.settings
        patience = settings.http.body_timeout_seconds
        loop = asyncio.get_running_loop()
        waited, received = 0.0, 0  # only the time spent waiting for the client counts
        chunks = super().stream()
        try:
            while True:
                due = BODY_GRACE_SECONDS + received / BODY_MIN_RATE - waited
                asked = loop.time()
                try:
                    async with asyncio.timeout(min(patience, max(due, 0.0))):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    detail = f"the request's body stopped coming for {patience:g} s"
                    if due < patience:
                        detail = f"the request's body came slower than {BODY_MIN_RATE} bytes/s"
                    raise BodyTimeout(detail) from None
                waited += loop.time() - asked
                received += len(chunk)
                yield chunk
        except InternalServerException as exc:
            if exc.detail != _DISCONNECTED:
                raise
            raise ClientGone("the client closed the connection before sending its body") from exc
        finally:
            await chunks.aclose()

    async def body(self) -> bytes:
        body = await super().body()
        # Litestar parses a url-encoded form from the body itself (not through form()). A route
        # that reads its body as bytes (opt raw_body: a roster file, which `curl --data-binary`
        # labels a form) is no form.
        if (
            self.content_type[0] == RequestEncodingType.URL_ENCODED
            and not self.route_handler.opt.get("raw_body")
            and (error := _pairs_problem(body, "body"))
        ):
            raise error
        return body


def _pairs_problem(encoded: bytes, source: str) -> Invalid | None:
    """The first control character in `a=1&b=2` (a query, a form), naming its parameter."""
    text = encoded.decode("utf-8", "replace")
    for name, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
        shown = name if len(name) <= 40 else name[:40] + "…"  # never a whole body echoed
        for where, part in ((f"{shown!r} (a parameter name)", name), (shown, value)):
            if problem := control_problem(part):
                return _refuse(where, source, problem)
    return None


def _scope_problem(scope: Scope) -> Invalid | None:
    """The first control character in the path, the query or a header, as an error."""
    if problem := control_problem(scope["path"]):
        return _refuse("path", "path", problem)
    if error := _pairs_problem(scope.get("query_string", b""), "query"):
        return error
    for name, value in scope.get("headers", ()):
        if found := _HEADER_CONTROL.search(value):
            header = name.decode("latin-1")
            detail = f"contains the control character U+{found[0][0]:04X}"
            return _refuse(header, "header", detail)
    return None


class InputGuardMiddleware:
    """Refuses control characters in a request's path, query and headers before any handler
    (or the key lookup) sees them; not on paths under `exclude` (gateway callbacks check each
    item of a batch themselves: one bad item must not fail the others)."""

    def __init__(self, app: ASGIApp, exclude: tuple[str, ...] = ()) -> None:
        self.app, self.exclude = app, exclude

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == ScopeType.HTTP
            and not scope["path"].startswith(self.exclude)
            and (error := _scope_problem(scope))
        ):
            raise error
        await self.app(scope, receive, send)
