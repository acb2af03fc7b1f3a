"""The per-process buckets (the limiter's fallback) on a clock the test moves by hand."""

from __future__ import annotations

from hub.buckets import Limit, LocalBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_all_or_nothing_across_buckets_and_refill_on_the_clock() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    key, tenant = Limit(rate=1, burst=3), Limit(rate=0.25, burst=4)
    keys = ["key", "tenant"]
    assert [buckets.take(keys, [key, tenant], 1).wait_seconds for _ in range(3)] == [0, 0, 0]
    refused = buckets.take(keys, [key, tenant], 1)
    assert (refused.wait_seconds, refused.shortest, refused.left) == (1.0, 0, [0, 1])
    # Nothing was taken from the tenant's bucket by the refusal: it still has 1.
    clock.now += 1.0
    granted = buckets.take(keys, [key, tenant], 1)
    assert (granted.wait_seconds, granted.left) == (0, [0, 0])  # the tenant keeps 0.25
    # Now the tenant is the short one: a quarter of a unit a second.
    refused = buckets.take(keys, [key, tenant], 1)
    assert (refused.shortest, refused.wait_seconds) == (1, 3.0)
    clock.now += 60
    assert buckets.take(keys, [key, tenant], 3).left == [0, 1]  # full again, never over burst
