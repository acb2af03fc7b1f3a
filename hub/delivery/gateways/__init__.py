"""SMS gateway adapters, one module per kind, all behind `hub.delivery.gateway.Gateway`.

Each module `hub.delivery.gateways.<kind>` has `build(config) -> Gateway`; the modules are
imported only when a gateway of their kind is configured.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from hub.db import Database
    from hub.delivery.gateway import Gateway
    from hub.settings import GatewayConfig


def build(config: GatewayConfig, db: Database) -> Gateway:
    """The adapter for `config`; only the outbox, which writes to the hub's own table, takes
    the database."""
    module = importlib.import_module(f"hub.delivery.gateways.{config.kind}")
    gateway: Gateway = module.build(config, db) if config.kind == "outbox" else module.build(config)
    return gateway


# An HTTP request that failed with one of these never left us whole: nothing was handed over,
# so it may go again. Any other transport error (a read or write timeout, the connection lost
# or the server gone silent mid-exchange) came after the request was written: the gateway may
# have taken it, and neither Kannel's sendsms nor Alibaba's SendBatchSms can be asked or told
# to drop a repeat, so its outcome is unknown and it is never sent again.
NOTHING_WRITTEN: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
)
