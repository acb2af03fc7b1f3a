"""Which gateway takes a carrier's messages, with a circuit breaker per gateway.

A carrier goes to the first configured gateway that lists it (or lists no carriers). A gateway
that fails `circuit_failures` batches in a row is open (skipped) for `circuit_seconds`; its
traffic follows its `fallback` chain. After that time one batch tries it again (half open): a
success closes it, a failure opens it again. The breaker is per worker process: each learns
for itself, which needs no coordination and reacts within a few batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from hub.delivery.gateway import Gateway
from hub.settings import DeliverySettings


class Breaker:
    def __init__(self, failures: int, seconds: float, clock: Callable[[], float]) -> None:
        self.limit, self.seconds, self.clock = failures, seconds, clock
        self.failures = 0
        self.open_until = 0.0

    @property
    def open(self) -> bool:
        return self.failures >= self.limit and self.clock() < self.open_until

    def success(self) -> None:
        self.failures = 0

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.limit:
            self.open_until = self.clock() + self.seconds


class Router:
    def __init__(
        self,
        gateways: Mapping[str, Gateway],
        settings: DeliverySettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateways = dict(gateways)
        self.breakers = {
            name: Breaker(settings.circuit_failures, settings.circuit_seconds, clock)
            for name in self.gateways
        }

    def primary(self, carrier: str) -> Gateway:
        for gateway in self.gateways.values():
            if not gateway.config.carriers or carrier in gateway.config.carriers:
                return gateway
        return next(iter(self.gateways.values()))

    def route(self, carrier: str) -> Gateway:
        """The gateway for `carrier` now: its primary, or the first closed one down the fallbacks
        (the primary again when every one is open: somebody must try)."""
        first = gateway = self.primary(carrier)
        seen: set[str] = set()
        while gateway.config.name not in seen:
            if not self.breakers[gateway.config.name].open:
                return gateway
            seen.add(gateway.config.name)
            fallback = gateway.config.fallback
            if fallback is None or fallback not in self.gateways:
                break
            gateway = self.gateways[fallback]
        return first

    def outcome(self, gateway: str, ok: bool) -> None:
        breaker = self.breakers[gateway]
        breaker.success() if ok else breaker.failure()
