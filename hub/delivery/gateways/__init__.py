"""SMS gateway adapters, one module per kind, all behind `hub.delivery.gateway.Gateway`.

Each module `hub.delivery.gateways.<kind>` has `build(config) -> Gateway`; the modules are
imported only when a gateway of their kind is configured.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.delivery.gateway import Gateway
    from hub.settings import GatewayConfig


def build(config: GatewayConfig) -> Gateway:
    module = importlib.import_module(f"hub.delivery.gateways.{config.kind}")
    gateway: Gateway = module.build(config)
    return gateway
