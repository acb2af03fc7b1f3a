"""The Litestar application: `create_app(settings=None)`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from arq.connections import ArqRedis
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.plugins.prometheus import PrometheusConfig
from litestar.response import Redirect

from hub import queue
from hub.archive.controllers import ArchiveController
from hub.billing.controllers import BillingController, CloseController, UsageController
from hub.campaigns.controllers import CampaignController
from hub.contacts.controllers import ContactController, OptOutController
from hub.dashboard import controllers as dashboard
from hub.dashboard.admin import AdminPages
from hub.dashboard.archive import ArchivePages
from hub.dashboard.compose import ComposeController
from hub.dashboard.contacts import RosterPages
from hub.dashboard.operations import OperationPages
from hub.dashboard.reviews import ReviewPages
from hub.dashboard.sends import SendsController
from hub.db import Database, PoolDatabase, create_pool, create_read_pool, provide_connection
from hub.delivery.controllers import GatewayCallbackController, InboundController
from hub.errors import exception_handlers
from hub.health.controllers import HealthController, MetricsController
from hub.health.metrics import Scrapes
from hub.health.tally import Tally
from hub.inputs import HubRequest, InputGuardMiddleware
from hub.limits.controllers import RateLimitController, RateLimitMiddleware
from hub.limits.service import Limiter
from hub.messages.controllers import MessageController, QuietHoursController
from hub.openapi import complete_schema, docs_assets, openapi_config
from hub.oplog.controllers import OperationController
from hub.oplog.service import Log
from hub.people.controllers import PeopleController
from hub.quota.controllers import QuotaController
from hub.reads import Standby, mark_side, provide_read_connection
from hub.retention.controllers import RetentionController
from hub.reviews.controllers import ReviewController, ReviewRuleController
from hub.settings import Settings, load_settings
from hub.signatures.controllers import SignatureController
from hub.signatures.service import Desk
from hub.templates.controllers import TemplateController
from hub.users.controllers import UserController
from hub.wire import HubResponse
from tenants.auth import PUBLIC_PATHS, ApiKeyMiddleware
from tenants.controllers import TenantController
from tenants.key_cache import KeyCache, follow_changes

VERSION = "0.1.0"
# Gateways call these with their own secret, not an API key.
GATEWAY_CALLBACK_PREFIX = "/v1/gateways/"
GATEWAY_CALLBACKS = f"^{GATEWAY_CALLBACK_PREFIX}"
# The dashboard signs in with a session cookie of its own (hub/dashboard).
DASHBOARD = "^/dashboard"
# Routes that take no API key: neither the key middleware nor the request limiter runs there.
KEYLESS = [*PUBLIC_PATHS, GATEWAY_CALLBACKS, DASHBOARD]


@get("/docs", include_in_schema=False)
async def docs() -> Redirect:
    return Redirect("/schema/swagger")


def key_cache(settings: Settings) -> KeyCache | None:
    """The process's cache of checked keys, or None: none asked for (key_cache_seconds = 0), or
    PostgreSQL reached through a transaction pooler, where LISTEN cannot work."""
    if settings.http.key_cache_seconds <= 0 or settings.db.pooler == "transaction":
        return None
    return KeyCache(settings.http.key_cache_seconds)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    redis: ArqRedis | None = None,
) -> Litestar:
    """The hub's ASGI app. `db` and `redis` are opened from settings unless given (tests)."""
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def connections(app: Litestar) -> AsyncIterator[None]:
        dashboard.warn_retired_secret(settings)
        async with contextlib.AsyncExitStack() as stack:
            if db is None:
                if not settings.db.dsn:
                    raise RuntimeError("HUB_DB__DSN is not set (`hub up` sets it for you)")
                pool = PoolDatabase(await create_pool(settings.db, settings.db.dsn))
                stack.push_async_callback(pool.close)
                app.state.db = pool
                if (cache := key_cache(settings)) is not None:
                    follower = asyncio.create_task(follow_changes(settings.db.dsn, cache))
                    stack.push_async_callback(_stop, follower)
                    app.state.key_cache = cache
            if (read_pool := await create_read_pool(settings.db)) is not None:
                # Reads that may lag go there while it keeps up (hub.reads).
                standby = Standby(
                    PoolDatabase(read_pool), app.state.db, settings.db.read_max_lag_seconds
                )
                stack.push_async_callback(standby.db.close)
                app.state.standby = standby
            if redis is None:
                if not settings.redis.dsn:
                    raise RuntimeError("HUB_REDIS__DSN is not set (`hub up` sets it for you)")
                client = await queue.connect(settings.redis.dsn)
                stack.push_async_callback(client.aclose)
                app.state.redis = client
            # Receipt lags and close times this process measures, added up in Redis.
            app.state.tally.start_flushing(app.state.redis)
            stack.push_async_callback(app.state.tally.stop_flushing, app.state.redis)
            yield

    logging.getLogger("hub").setLevel(settings.log_level.upper())
    metrics = PrometheusConfig(app_name="hub", prefix="hub", group_path=True, exclude=["^/metrics"])
    app = Litestar(
        route_handlers=[
            HealthController,
            MetricsController,
            TenantController,
            QuotaController,
            MessageController,
            QuietHoursController,
            RetentionController,
            ContactController,
            OptOutController,
            TemplateController,
            ReviewController,
            ReviewRuleController,
            SignatureController,
            CampaignController,
            GatewayCallbackController,
            BillingController,
            UsageController,
            CloseController,
            InboundController,
            RateLimitController,
            UserController,
            OperationController,
            PeopleController,
            ArchiveController,
            dashboard.DashboardController,
            SendsController,
            ComposeController,
            ReviewPages,
            AdminPages,
            OperationPages,
            ArchivePages,
            RosterPages,
            dashboard.static_files(),
            docs,
            docs_assets(),
        ],
        dependencies={
            "conn": Provide(provide_connection),
            # Reads that may lag: a read-only transaction on the standby when one is set and
            # fresh enough, else on the primary (hub.reads).
            "read_conn": Provide(provide_read_connection),
            # Tenancy's routes hand the signatures they are given to hub's reviews.
            "signature_desk": Provide(Desk, use_cache=True, sync_to_thread=False),
            # Tenancy's routes write the operation log through hub's one recorder.
            "oplog": Provide(Log, use_cache=True, sync_to_thread=False),
        },
        # Bodies are checked for control characters and depth as they are decoded.
        request_class=HubRequest,
        # JSON answers write every timestamp one way (hub.wire, hub.calendar.rfc3339).
        response_class=HubResponse,
        middleware=[
            metrics.middleware,
            DefineMiddleware(InputGuardMiddleware, exclude=(GATEWAY_CALLBACK_PREFIX,)),
            DefineMiddleware(ApiKeyMiddleware, exclude=KEYLESS),
            # After the key middleware: it charges the key that middleware found.
            RateLimitMiddleware(exclude=KEYLESS),
        ],
        # The side that served a read that may lag, as the answer's X-Hub-Read header.
        before_send=[mark_side],
        exception_handlers=dashboard.html_errors(exception_handlers()),
        template_config=dashboard.template_config(),
        lifespan=[connections],
        state=_initial_state(settings, db, redis),
        openapi_config=openapi_config(VERSION),
        request_max_body_size=settings.http.max_body_bytes,
        debug=settings.http.debug,
    )
    complete_schema(app, keyless=KEYLESS)
    return app


def _initial_state(settings: Settings, db: Database | None, redis: ArqRedis | None) -> State:
    state: dict[str, object] = {
        "settings": settings,
        "limiter": Limiter(settings.limits, processes=settings.http.workers),
        # What this process measures for /metrics (hub.health.tally).
        "tally": Tally(),
        # One /metrics collection at a time (hub.health.metrics.Scrapes).
        "scrapes": Scrapes(),
    }
    if db is not None:
        state["db"] = db
    if redis is not None:
        state["redis"] = redis
    return State(state)
