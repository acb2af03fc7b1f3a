"""Real gateway peers the delivery tests drive: Kannel, an SMPP server, an Alibaba-style provider.

A peer that needs a system package (Kannel from Debian) skips its tests when the package is
missing on a developer's machine, so the README's test command works anywhere; `.ci/run` installs
the packages and sets `HUB_TEST_REQUIRE_PEERS=1`, which turns that skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime

import pytest


def wall_clock() -> datetime:
    """The real time, as a carrier's own servers keep it. Peers stamp and check their protocol
    times (signed timestamps, receipt dates) by it, never by the hub's clock, which tests pin."""
    return datetime.fromtimestamp(time.time(), UTC)


def require_binary(path: str, package: str) -> str:
    """`path` if it is installed; otherwise skip (or fail under HUB_TEST_REQUIRE_PEERS=1)."""
    if shutil.which(path) or os.path.exists(path):
        return path
    message = f"{path} is not installed (apt-get install -y {package})"
    if os.environ.get("HUB_TEST_REQUIRE_PEERS") == "1":
        pytest.fail(message)
    pytest.skip(message)
