"""The dedup-in-time tests again with the keys claimed through the scratch table and COPY, the
path of sends over hub.dedup.service.INLINE_KEYS recipients (the tests' own sends are small, so
test_dedup_in_time.py runs the inline path): both paths must decide alike."""

from __future__ import annotations

import pytest

from hub.dedup import service as dedup
from tests.integration.messages.test_dedup_in_time import *  # noqa: F403  (the same tests)


@pytest.fixture(autouse=True)
def _by_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dedup, "INLINE_KEYS", 0)
