"""The baseline of ops/bench/api_load.py: a bare Litestar app doing one INSERT per request.

    HUB_BARE_DSN=postgresql://… uvicorn ops.bench.api_bare:create_app --factory --workers 2

The least an HTTP API that stores a send can do on the hub's own server stack (Litestar on
uvicorn, asyncpg, msgspec, the same number of processes and the same pool size as `hub serve`):
decode a JSON body `{"to": [phone], "body": text}`, check the bearer token is there, INSERT one
row into `bare_messages` (autocommit) and answer 202 with its id. No key lookup, no quota, no
dedup, no queue: the hub's rate divided by this one is what all of those cost.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import msgspec
from litestar import Litestar, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException

TABLE = """
CREATE TABLE IF NOT EXISTS bare_messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
INSERT = "INSERT INTO bare_messages (phone, body) VALUES ($1, $2) RETURNING id"


class Send(msgspec.Struct, forbid_unknown_fields=True):
    to: list[str]
    body: str


class Accepted(msgspec.Struct):
    id: int
    accepted: int


@post("/v1/messages", status_code=202)
async def send(request: Request[None, None, State], state: State, data: Send) -> Accepted:
    if not request.headers.get("authorization", "").startswith("Bearer "):
        raise NotAuthorizedException("missing key")
    pool: asyncpg.Pool = state.pool
    new_id: int = await pool.fetchval(INSERT, data.to[0], data.body)
    return Accepted(id=new_id, accepted=len(data.to))


@get("/readyz")
async def ready() -> str:
    return "ok"


def create_app() -> Litestar:
    dsn = os.environ["HUB_BARE_DSN"]
    pool_max = int(os.environ.get("HUB_BARE_POOL_MAX", "20"))

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # The table is created by the driver (api_load), once: two processes starting at once
        # would race on CREATE TABLE IF NOT EXISTS.
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=pool_max)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    return Litestar([send, ready], lifespan=[lifespan], openapi_config=None)
