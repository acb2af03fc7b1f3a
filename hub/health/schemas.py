"""Health answers."""

from __future__ import annotations

import msgspec


class Health(msgspec.Struct, frozen=True):
    status: str


class Readiness(msgspec.Struct, frozen=True):
    # "ok" when every check passed, else "unavailable" (and the status is 503).
    status: str
    # One entry per dependency: "ok" or what went wrong.
    checks: dict[str, str]
