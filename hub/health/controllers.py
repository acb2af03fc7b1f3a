"""Liveness and readiness probes, and /metrics (no API key needed)."""

from __future__ import annotations

import hmac
import os
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

from hub.errors import RETRY_AFTER_UNAVAILABLE as RETRY_AFTER
from hub.errors import Unauthorized
from hub.health import metrics, service
from hub.health.schemas import Health, Readiness
from hub.wire import HubResponse


class HealthController(Controller):
    tags = ["health"]  # noqa: RUF012 - Litestar reads it as a class attribute
    # No key needed: an empty requirement overrides the API-wide bearer requirement.
    security = [{}]  # noqa: RUF012

    @get("/healthz", summary="The process is up")
    async def healthz(self) -> Health:
        return Health(status="ok")

    @get(
        "/readyz",
        summary="PostgreSQL and Redis answer",
        responses={503: ResponseSpec(data_container=Readiness, description="A dependency is down")},
    )
    async def readyz(self, state: State) -> Response[Any]:
        checks = await service.readiness(state.db, state.redis)
        ok = all(v == "ok" for v in checks.values())
        body = Readiness(status="ok" if ok else "unavailable", checks=checks)
        if ok:
            return HubResponse(body)
        return HubResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER)})


# The text format both parts are written in (Litestar adds the charset).
TEXT_FORMAT = "text/plain; version=0.0.4"


class MetricsController(Controller):
    """Prometheus text: this process's request counts and latencies (Litestar's middleware,
    per process), then the hub's numbers for the whole cluster (hub.health.metrics)."""

    include_in_schema = False

    @get("/metrics", media_type=TEXT_FORMAT)
    async def metrics(self, request: Request[Any, Any, State], state: State) -> Response[bytes]:
        token = state.settings.http.metrics_token
        if token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise Unauthorized(
                    "/metrics needs `Authorization: Bearer <HUB_HTTP__METRICS_TOKEN>`"
                )

        async def collect() -> list[metrics.Family]:
            # What this process measured goes to Redis first, so its own scrape shows it.
            await state.tally.flush(state.redis)
            return await metrics.collect(state.db, state.redis, state.settings)

        families = await state.scrapes.collect(collect)
        body = generate_latest(_requests_registry()) + metrics.render(families).encode()
        return HubResponse(body, media_type=TEXT_FORMAT)


def _requests_registry() -> CollectorRegistry:
    """This process's request metrics; every `hub serve` worker's on one port when
    PROMETHEUS_MULTIPROC_DIR names a folder they share (prometheus_client's multiprocess mode)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
