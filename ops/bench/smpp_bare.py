"""Benchmark baseline: a bare smpp34 asyncio client submitting to the fake SMSC, receipts on.

    .venv/bin/python -m ops.bench.smpp_bare [--n 20000] [--window 10] [--repeat 3] [--port N]
        [--loop asyncio|uvloop] [--json]

What the SMPP adapter is measured against: one transceiver, `window` submit_sm in flight (one
task per slot), each message one 29-character Chinese segment (UCS-2, registered_delivery 1),
every deliver_sm receipt read by a task that does nothing else (inbound queue 100,000, as the
adapter). messages/s = n / the time until the last submit_sm_resp; the receipts still in flight
then are waited for but not timed (the adapter's rate is defined the same way: receipts go on
arriving after `submit` returns). Without --port it starts `python -m tests.peers.smsc` on a free
port for the run and stops it afterwards. `bare_rate` is importable, for a benchmark that wants
this baseline from the same run and machine; `bare_in_process` runs it as a child process on
either event loop (--loop; smpp34 gains about half again on uvloop, so a hub worker on uvloop is
compared with the bare client on uvloop too). --json prints one run as a JSON line: rate,
seconds to the last receipt, CPU seconds of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

import smpp34

from tests.peers.smsc import SmscProcess, free_port

TEXT = "【朝阳区委组织部】请于周五下午三点到三楼会议室参加学习会议"
SENDER = "10690000123456"
RECEIPT_WAIT = 300.0  # seconds for the last receipts to arrive after the last submit_sm_resp
assert len(TEXT) == 29


class BareRun(NamedTuple):
    rate: float  # messages/s to the last submit_sm_resp
    to_receipts: float  # seconds to the last receipt
    cpu: float  # CPU seconds of the process that ran it (user + system)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare_in_process(port: int, n: int, window: int, loop: str) -> BareRun:
    """One bare run against the SMSC on 127.0.0.1:`port`, in a child process on `loop`."""
    command = [sys.executable, "-m", "ops.bench.smpp_bare", "--port", str(port), "--n", str(n)]
    command += ["--window", str(window), "--loop", loop, "--json"]
    out = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return BareRun(**json.loads(out.strip().splitlines()[-1]))


async def bare_run(host: str, port: int, n: int = 20_000, window: int = 10) -> BareRun:
    """`bare_rate`, with the time to the last receipt and this process's CPU."""
    cpu, started = _cpu(), time.perf_counter()
    rate = await bare_rate(host, port, n, window)
    return BareRun(rate, time.perf_counter() - started, _cpu() - cpu)


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
    if args.json:
        print(json.dumps((await bare_run("127.0.0.1", args.port, args.n, args.window))._asdict()))
        return
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
        f"receipts on, {platform.python_implementation()} {platform.python_version()}, "
        f"{args.loop}: "
        f"median {statistics.median(rates):,.0f} messages/s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A bare smpp34 client against the fake SMSC.")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, help="an SMSC already listening on 127.0.0.1")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--json", action="store_true", help="one run (needs --port), as JSON")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_main(args))
    else:
        asyncio.run(_main(args))
