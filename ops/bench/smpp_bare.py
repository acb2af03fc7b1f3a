"""Benchmark baseline: a bare smpp34 asyncio client submitting to the fake SMSC, receipts on.

    .venv/bin/python -m ops.bench.smpp_bare [--n 20000] [--window 10] [--repeat 3] [--port N]

What the SMPP adapter is measured against: one transceiver, `window` submit_sm in flight (one
task per slot), each message one 29-character Chinese segment (UCS-2, registered_delivery 1),
every deliver_sm receipt read by a task that does nothing else (inbound queue 100,000, as the
adapter). messages/s = n / the time until the last submit_sm_resp; the receipts still in flight
then are waited for but not timed (the adapter's rate is defined the same way: receipts go on
arriving after `submit` returns). Without --port it starts `python -m tests.peers.smsc` on a free
port for the run and stops it afterwards. `bare_rate` is importable, for a benchmark that wants
this baseline from the same run and machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import platform
import statistics
import time

import smpp34

from tests.peers.smsc import SmscProcess, free_port

TEXT = "【朝阳区委组织部】请于周五下午三点到三楼会议室参加学习会议"
SENDER = "10690000123456"
RECEIPT_WAIT = 300.0  # seconds for the last receipts to arrive after the last submit_sm_resp
assert len(TEXT) == 29


async def bare_rate(host: str, port: int, n: int = 20_000, window: int = 10) -> float:
    """Messages per second a bare smpp34 client submits to the SMSC at host:port."""
    client = smpp34.Client(
        host, port, "hub", "secret", window_size=window, inbound_capacity=100_000
    )
    smsc = await client.connect()
    payload, numbers = TEXT.encode("utf-16-be"), iter(range(n))
    receipts, all_in = 0, asyncio.Event()

    async def read() -> None:
        nonlocal receipts
        while not isinstance(await smsc.next(), smpp34.Disconnected):
            receipts += 1
            if receipts == n:
                all_in.set()

    async def submit() -> None:
        for i in numbers:  # shared: each slot takes the next number
            resp = await smsc.submit_sm(
                f"86138{i:08d}",
                payload,
                source_addr=SENDER,
                data_coding=8,
                registered_delivery=1,
            )
            if not resp.is_success:
                raise RuntimeError(f"submit_sm refused: {resp!r}")

    reader = asyncio.create_task(read())
    started = time.perf_counter()
    await asyncio.gather(*(submit() for _ in range(window)))
    elapsed = time.perf_counter() - started
    try:
        await asyncio.wait_for(all_in.wait(), RECEIPT_WAIT)
    finally:
        await smsc.unbind()
        await reader
    return n / elapsed


async def _main(args: argparse.Namespace) -> None:
    peer = None if args.port else SmscProcess(free_port())
    port = args.port or (peer.port if peer else 0)
    if peer is not None:
        await peer.start()
    try:
        rates = []
        for run in itertools.count(1):
            rates.append(await bare_rate("127.0.0.1", port, args.n, args.window))
            print(f"run {run}: {rates[-1]:,.0f} messages/s", flush=True)
            if run == args.repeat:
                break
    finally:
        if peer is not None:
            await peer.stop()
    print(
        f"bare smpp34 {smpp34.__version__}, window {args.window}, {args.n:,} messages, "
        f"receipts on, {platform.python_implementation()} {platform.python_version()}: "
        f"median {statistics.median(rates):,.0f} messages/s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A bare smpp34 client against the fake SMSC.")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, help="an SMSC already listening on 127.0.0.1")
    asyncio.run(_main(parser.parse_args()))
