"""Routing: a carrier's gateway, its fallback while the circuit is open, and back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from hub.delivery.gateway import (
    Accepted,
    Events,
    Failed,
    HttpCallback,
    Outbound,
    Outcome,
    Parsed,
    Unknown,
)
from hub.delivery.gateways import smpp
from hub.delivery.routing import Router, verdict
from hub.settings import DeliverySettings, GatewayConfig


class _Gateway:
    """Routing reads only the configuration; nothing here is ever submitted to."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config

    async def start(self, events: Events) -> None: ...

    async def submit(self, messages: Sequence[Outbound]) -> list[Outcome]:
        raise AssertionError("routing never submits")

    def recorded(self, ids: Sequence[int]) -> None: ...

    def parse_callback(self, kind: Literal["receipts", "inbound"], call: HttpCallback) -> Parsed:
        raise AssertionError("routing never parses")

    async def close(self) -> None: ...


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _router(clock: _Clock) -> Router:
    configs = [
        GatewayConfig(name="cmcc", kind="smpp", carriers=["中国移动"], fallback="backup"),
        GatewayConfig(name="telecom", kind="kannel", carriers=["中国电信", "中国联通"]),
        GatewayConfig(name="backup", kind="aliyun"),  # every carrier
    ]
    settings = DeliverySettings(gateways=configs, circuit_failures=3, circuit_seconds=30)
    return Router({c.name: _Gateway(c) for c in configs}, settings, clock=clock)


async def test_carriers_go_to_their_own_gateway_and_the_rest_to_the_catch_all() -> None:
    router = _router(_Clock())
    assert (await router.route("中国移动")).config.name == "cmcc"
    assert (await router.route("中国联通")).config.name == "telecom"
    assert (await router.route("中国广电")).config.name == "backup"
    assert (await router.route("unknown")).config.name == "backup"


async def test_a_failing_gateway_is_skipped_while_open_and_tried_again_after() -> None:
    clock = _Clock()
    router = _router(clock)
    for _ in range(2):
        await router.outcome("cmcc", ok=False)
    assert (await router.route("中国移动")).config.name == "cmcc"  # two failures: still closed
    await router.outcome("cmcc", ok=False)
    assert (await router.route("中国移动")).config.name == "backup"  # open: the fallback takes it
    clock.now += 29
    assert (await router.route("中国移动")).config.name == "backup"
    clock.now += 2
    assert (await router.route("中国移动")).config.name == "cmcc"  # half open: one try
    await router.outcome("cmcc", ok=False)
    assert (await router.route("中国移动")).config.name == "backup"  # failed again: open again
    clock.now += 31
    await router.outcome("cmcc", ok=True)
    assert (await router.route("中国移动")).config.name == "cmcc"  # recovered: closed
    for _ in range(2):
        await router.outcome("cmcc", ok=False)
    assert (await router.route("中国移动")).config.name == "cmcc"  # the count started again


async def test_with_every_gateway_open_the_primary_is_tried() -> None:
    router = _router(_Clock())
    for name in ("telecom", "backup"):
        for _ in range(3):
            await router.outcome(name, ok=False)
    assert (await router.route("中国电信")).config.name == "telecom"


def _sent(*ids: int) -> list[Outbound]:
    return [Outbound(i, f"+861380013800{i}", "【测试】一", 1, "ucs2", "1069") for i in ids]


def test_a_chunks_verdict_blames_the_gateway_only_for_its_own_trouble() -> None:
    limited = Failed(1, False, "isv.BUSINESS_LIMIT_CONTROL", per_recipient=True)
    illegal = Failed(2, True, "isv.MOBILE_NUMBER_ILLEGAL", per_recipient=True)
    busy = Failed(2, False, "isp.SYSTEM_ERROR")
    assert verdict(_sent(1, 2), [limited, Accepted(2, "r")]) is True
    assert verdict(_sent(1, 2), [limited, illegal]) is None  # nothing said of the gateway
    assert verdict(_sent(1), [Failed(1, True, "isv.TEMPLATE_MISSING")]) is None
    assert verdict(_sent(1, 2), [limited, busy]) is False
    assert verdict(_sent(1, 2), [limited, Unknown(2, "timeout")]) is False
    assert verdict(_sent(1, 2), [limited]) is False  # a message left unanswered


def test_smpp_refusals_about_one_destination_are_per_recipient() -> None:
    assert smpp.failure(1, 0x58).per_recipient  # ESME_RTHROTTLED
    assert smpp.failure(1, 0x14).per_recipient  # ESME_RMSGQFUL
    assert not smpp.failure(1, 0x45).per_recipient  # ESME_RSUBMITFAIL: the SMSC failed
    assert smpp.failure(1, 0x401).per_recipient  # a vendor's code
    assert not smpp.failure(1, 0x08).per_recipient  # ESME_RSYSERR: the SMSC itself
    assert not smpp.failure(1, smpp.NOT_BOUND).per_recipient
