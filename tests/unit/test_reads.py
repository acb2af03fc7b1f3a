"""How old a standby's view may be (hub.reads.lag_bound): positions, not the age of the last
commit alone, which an idle primary makes large with nothing missing."""

from __future__ import annotations

import math

import pytest

from hub.reads import lag_bound

AN_HOUR = 3600.0


def test_a_standby_that_replayed_the_primarys_position_is_current_on_an_idle_primary() -> None:
    # The last commit is an hour old, but the standby has everything the primary had flushed
    # when the check began 4 ms ago.
    assert lag_bound(10.004, [(10.0, 100)], 100, AN_HOUR) == pytest.approx(0.004)


def test_a_busy_primary_lags_by_the_age_of_the_last_commit_replayed() -> None:
    seen = [(9.0, 90), (10.0, 100)]
    assert lag_bound(10.01, seen, 95, 0.2) == pytest.approx(0.2)


def test_a_paused_standby_after_an_idle_hour_lags_since_the_last_position_it_reached() -> None:
    # The primary was idle until a write just now; the standby stopped replaying at 90, which
    # the primary had reached by the check at 5.0: what it misses is at most 5.1 s old.
    seen = [(5.0, 90), (10.0, 100)]
    assert lag_bound(10.1, seen, 90, AN_HOUR) == pytest.approx(5.1)


def test_nothing_known_is_an_unbounded_lag() -> None:
    assert lag_bound(10.0, [(10.0, 100)], 50, None) == math.inf


def test_a_commit_stamped_ahead_of_the_standby_clock_counts_as_no_lag() -> None:
    assert lag_bound(10.0, [], 50, -0.3) == 0.0
