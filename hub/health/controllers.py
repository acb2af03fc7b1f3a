"""Liveness and readiness probes (no key needed)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from hub.errors import RETRY_AFTER_UNAVAILABLE as RETRY_AFTER
from hub.health import service
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
