"""The Litestar application: `create_app(settings=None)`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
from arq.connections import ArqRedis
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, OpenAPIType, Schema, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.response import Redirect

from hub import queue
from hub.campaigns.controllers import CampaignController
from hub.contacts.controllers import ContactController
from hub.db import Database, PoolDatabase, create_pool, provide_connection
from hub.errors import exception_handlers
from hub.health.controllers import HealthController
from hub.messages.controllers import MessageController, QuietHoursController
from hub.quota.controllers import QuotaController
from hub.settings import Settings, load_settings
from hub.templates.controllers import TemplateController
from tenants.auth import PUBLIC_PATHS, ApiKeyMiddleware
from tenants.controllers import TenantController

VERSION = "0.1.0"
OWN_PACKAGES = ("hub", "tenants")


class MetricsController(PrometheusController):
    include_in_schema = False


@get("/docs", include_in_schema=False)
async def docs() -> Redirect:
    return Redirect("/schema/swagger")


def _openapi() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="hub",
        version=VERSION,
        description="One shared SMS service for a province's organization departments.",
        path="/schema",
        render_plugins=[RedocRenderPlugin(path="/"), SwaggerRenderPlugin(path="/swagger")],
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="hub_<prefix>_<secret>",
                    description="An API key from `hub keys create` or POST /v1/tenants/{code}/keys",
                )
            }
        ),
        security=[{"apiKey": []}],
    )


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
        async with contextlib.AsyncExitStack() as stack:
            if db is None:
                if not settings.db.dsn:
                    raise RuntimeError("HUB_DB__DSN is not set (`hub up` sets it for you)")
                pool = PoolDatabase(await create_pool(settings.db, settings.db.dsn))
                stack.push_async_callback(pool.close)
                app.state.db = pool
            if redis is None:
                if not settings.redis.dsn:
                    raise RuntimeError("HUB_REDIS__DSN is not set (`hub up` sets it for you)")
                client = await queue.connect(settings.redis.dsn)
                stack.push_async_callback(client.aclose)
                app.state.redis = client
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
            ContactController,
            TemplateController,
            CampaignController,
            docs,
        ],
        dependencies={"conn": Provide(provide_connection)},
        middleware=[
            metrics.middleware,
            DefineMiddleware(ApiKeyMiddleware, exclude=PUBLIC_PATHS),
        ],
        exception_handlers=exception_handlers(),
        lifespan=[connections],
        state=_initial_state(settings, db, redis),
        openapi_config=_openapi(),
        request_max_body_size=settings.http.max_body_bytes,
        debug=settings.http.debug,
    )
    _complete_schema(app)
    return app


def _structs(base: type[msgspec.Struct]) -> Iterator[type[msgspec.Struct]]:
    for sub in base.__subclasses__():
        yield sub
        yield from _structs(sub)


def _int_minimums(struct: type[msgspec.Struct]) -> Iterator[tuple[str, int]]:
    """(field, minimum) for every int field with a lower bound, unions with None included."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        types = (
            field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,)
        )
        for kind in types:
            if isinstance(kind, msgspec.inspect.Metadata):
                kind = kind.type
            if isinstance(kind, msgspec.inspect.IntType) and kind.ge is not None:
                yield field.encode_name, kind.ge


def _schema(spec: dict[str, Any]) -> Schema:
    """A Litestar Schema from a small JSON Schema dict (the keywords our rules use)."""

    def each(key: str) -> list[Schema] | None:
        return [_schema(s) for s in spec[key]] if key in spec else None

    return Schema(
        type=OpenAPIType(spec["type"]) if "type" in spec else None,
        required=spec.get("required"),
        min_items=spec.get("minItems"),
        properties={k: _schema(v) for k, v in spec.get("properties", {}).items()} or None,
        all_of=each("allOf"),
        any_of=each("anyOf"),
        one_of=each("oneOf"),
    )


def _complete_schema(app: Litestar) -> None:
    """Say in the OpenAPI document what our bodies enforce but Litestar leaves out.

    - `additionalProperties: false` for every body that rejects unknown fields;
    - `minimum` for int fields bounded below by 0 (Litestar drops a falsy bound inside unions);
    - rules across fields a body declares in `__openapi_rules__` (an `allOf` of alternatives).
    A client that trusts the schema would otherwise send what we answer 422 to.
    """
    schemas = app.openapi_schema.components.schemas or {}
    for struct in _structs(msgspec.Struct):
        schema = schemas.get(struct.__name__)
        if schema is None or getattr(struct, "__module__", "").split(".")[0] not in OWN_PACKAGES:
            continue
        if struct.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        if rules := getattr(struct, "__openapi_rules__", None):
            schema.all_of = _schema(rules).all_of
        for name, minimum in _int_minimums(struct):
            prop = (schema.properties or {}).get(name)
            if isinstance(prop, Schema) and prop.minimum is None:
                prop.minimum = minimum


def _initial_state(settings: Settings, db: Database | None, redis: ArqRedis | None) -> State:
    state: dict[str, object] = {"settings": settings}
    if db is not None:
        state["db"] = db
    if redis is not None:
        state["redis"] = redis
    return State(state)
