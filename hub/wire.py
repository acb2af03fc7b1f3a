"""The JSON the hub writes: one encoder, so every timestamp has one form.

msgspec writes a datetime itself and never asks an `enc_hook` (nor Litestar's `type_encoders`)
about one, so its form would follow the value: `Z` for the UTC times asyncpg reads,
`+08:00` for a time made in Beijing, six fractional digits or none depending on the microsecond.
`encode` turns a value into builtins with datetimes kept as they are, writes each one with
`hub.calendar.rfc3339` (RFC 3339, Beijing time, to the microsecond), then encodes. Every JSON
answer goes through it: the app's `response_class` is `HubResponse`, and the bodies the hub
stores or sends itself (idempotent replays, webhook pushes, the streamed statement) call
`encode` directly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from litestar import Response
from litestar.response.base import MEDIA_TYPE_APPLICATION_JSON_PATTERN
from litestar.serialization import default_serializer

from hub.calendar import rfc3339

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


def encode(value: Any, enc_hook: Callable[[Any], Any] | None = None) -> bytes:
    """`value` as JSON, every datetime in it written by `rfc3339`."""
    tree = msgspec.to_builtins(value, builtin_types=(datetime,), enc_hook=enc_hook)
    return _encoder.encode(_times(tree))


def _times(node: Any) -> Any:
    """Replace the datetimes in a tree of builtins (fresh containers of our own) in place."""
    kind = type(node)
    if kind is datetime:
        return rfc3339(node)
    if kind is dict:
        for key, value in node.items():
            if type(value) in _NESTED:
                node[key] = _times(value)
    elif kind is list:
        for n, value in enumerate(node):
            if type(value) in _NESTED:
                node[n] = _times(value)
    return node


_NESTED = frozenset({datetime, dict, list})


class HubResponse(Response[T]):
    """Litestar's Response with JSON bodies written by `encode` (the app's `response_class`;
    a handler that builds its own answer uses this class too)."""

    def render(
        self, content: Any, media_type: str, enc_hook: Callable[[Any], Any] = default_serializer
    ) -> bytes:
        if isinstance(content, msgspec.Raw):  # already JSON (written by `encode` when stored)
            return bytes(content)
        if isinstance(content, bytes | str) or not MEDIA_TYPE_APPLICATION_JSON_PATTERN.match(
            media_type
        ):
            return super().render(content, media_type, enc_hook)
        return encode(content, enc_hook)
