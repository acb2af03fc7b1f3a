"""A fake SMSC on smpp34's server API: the peer of the SMPP adapter's tests and benchmarks.

In-process: `smsc = FakeSmsc(); await smsc.start()` (it picks a free port: `smsc.port`) … `await
smsc.stop()`. As a process: `python -m tests.peers.smsc --port N [--counts FILE]` prints
`ready N` once it listens; on SIGTERM it writes its counts to FILE as JSON and exits
(`SmscProcess` runs one from a test and reads them).

It answers every submit_sm with a new message id and then pushes a delivery receipt
(`id:… sub:001 dlvrd:001 submit date:… done date:… stat:DELIVRD err:000 text:`; UNDELIV/err 001
for a destination in `undelivered`) when one was requested, in order, one at a time per session.
`fail_next(status, n)` refuses the next n submits; `answer_next(...)` scripts the answers to the
next submits one by one: 0 accepts, a status refuses, `DROP` takes the message (counted as the
SMSC's) but never answers and drops the session it came on (the answer is lost), `HOLD` takes it
and never answers (smpp34's client times out after 30 s). A destination in `invalid` is refused
with ESME_RINVDSTADR. `id_prefix` fixes what message ids start with (they count from 1), so a
second FakeSmsc with the same prefix hands out the same ids again, as a restarted SMSC can;
`receipts=False` sends none. It counts what it accepted per (destination, text of the part), per
(destination, whole text) once every part of a concatenated message is in, and per message id.
`send_mo` pushes a reply (UCS-2, in UDH parts if long) to the bound session.

smpp34's server accepts every bind before Python sees it and never shows the password, so the
password cannot be checked; a session bound with another system_id is unbound at once.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import itertools
import json
import secrets
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import smpp34

from tests.peers import wall_clock

ROOT = Path(__file__).resolve().parents[2]
ESME_RINVDSTADR = 0x0B
DROP, HOLD = -1, -2  # answer_next: no answer, and the session dropped / kept
# smpp34's tokio threads can crash the interpreter's finalization (see hub.delivery.gateways.smpp).
atexit.register(time.sleep, 0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _read(short_message: bytes, esm_class: int, data_coding: int) -> tuple[str, tuple[int, ...]]:
    """The text of one submit_sm and its concatenation (reference, total, number), if any."""
    concat: tuple[int, ...] = ()
    if esm_class & 0x40 and short_message[1:3] == b"\x00\x03":
        concat, short_message = tuple(short_message[3:6]), short_message[1 + short_message[0] :]
    return short_message.decode("utf-16-be" if data_coding == 8 else "latin-1"), concat


class FakeSmsc:
    def __init__(
        self,
        port: int = 0,
        *,
        system_id: str = "hub",
        undelivered: Iterable[str] = (),
        invalid: Iterable[str] = (),
        id_prefix: str | None = None,
        receipts: bool = True,
    ) -> None:
        self.port, self.system_id = port, system_id
        self.undelivered, self.invalid = set(undelivered), set(invalid)
        self.received = self.binds = 0  # every submit_sm, accepted or not; every bind kept
        self.parts: Counter[tuple[str, str]] = Counter()
        self.messages: Counter[tuple[str, str]] = Counter()
        self.by_id: dict[str, tuple[str, str]] = {}
        self._failures: list[int] = []
        self._partial: dict[tuple[str, int, int], dict[int, str]] = {}
        self._sessions: dict[str, tuple[smpp34.Esme, asyncio.Task[None]]] = {}
        self._bound_once = asyncio.Event()
        self._queues: dict[str, asyncio.Queue[tuple[str, str, str]]] = {}
        prefix = secrets.token_hex(3) if id_prefix is None else id_prefix
        self._ids = (f"{prefix}{n:x}" for n in itertools.count(1))
        self.receipts = receipts
        self.unanswered: list[smpp34.SubmitSmEvent] = []  # kept: a dropped event would NAK
        self._tasks: set[asyncio.Task[None]] = set()

    def fail_next(self, status: int, count: int = 1) -> None:
        self._failures += [status] * count

    def answer_next(self, *answers: int) -> None:
        self._failures += answers

    async def start(self) -> None:
        for _ in range(5):  # a free port can be taken by another test process meanwhile
            port = self.port or free_port()
            self._server = smpp34.Server("127.0.0.1", port, inbound_capacity=100_000)
            try:
                await self._server.start()
            except smpp34.SmppError:
                if self.port:
                    raise
                continue
            self.port = port
            self._serving = asyncio.create_task(self._serve())
            return
        raise RuntimeError("no free port for the fake SMSC")

    async def drop_sessions(self) -> None:
        for esme, pusher in list(self._sessions.values()):
            pusher.cancel()
            await esme.unbind()

    async def stop(self) -> None:
        await self.drop_sessions()
        self._serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._serving
        await self._server.stop()

    async def send_mo(self, phone: str, to: str, text: str) -> None:
        """A reply from `phone` to `to`, on the session bound last (waiting for the bind to
        reach this side: the client may see its bind_resp before we have filed the session)."""
        async with asyncio.timeout(10):
            await self._bound_once.wait()
        esme, _ = list(self._sessions.values())[-1]
        data, reference = text.encode("utf-16-be"), secrets.randbelow(256)
        chunks = (
            [data] if len(data) <= 140 else [data[i : i + 134] for i in range(0, len(data), 134)]
        )
        for number, chunk in enumerate(chunks, 1):
            udh = bytes([5, 0, 3, reference, len(chunks), number]) if len(chunks) > 1 else b""
            esm_class = 0x40 if udh else 0
            await esme.deliver_sm(
                to, udh + chunk, source_addr=phone, esm_class=esm_class, data_coding=8
            )

    def counts(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "binds": self.binds,
            "parts": [[*key, n] for key, n in self.parts.items()],
            "messages": [[*key, n] for key, n in self.messages.items()],
        }

    async def _serve(self) -> None:
        while True:
            event = await self._server.next()
            if isinstance(event, smpp34.Esme):
                await self._bound(event)
            elif isinstance(event, smpp34.SubmitSmEvent):
                self._submit(event)
            elif (gone := self._sessions.pop(event.session_id, None)) is not None:
                gone[1].cancel()
                del self._queues[event.session_id]

    async def _bound(self, esme: smpp34.Esme) -> None:
        if esme.system_id != self.system_id:
            await esme.unbind()
            return
        self.binds += 1
        queue = self._queues[esme.session_id] = asyncio.Queue()
        self._sessions[esme.session_id] = (esme, asyncio.create_task(self._push(esme, queue)))
        self._bound_once.set()

    def _submit(self, event: smpp34.SubmitSmEvent) -> None:
        self.received += 1
        destination = event.destination_addr
        status = self._failures.pop(0) if self._failures else 0
        if not status and destination in self.invalid:
            status = ESME_RINVDSTADR
        if status in (DROP, HOLD):
            # Taken, as far as the phone is concerned; the answer never reaches the client.
            self.unanswered.append(event)
            text, concat = _read(event.short_message, event.esm_class, event.data_coding)
            self.parts[destination, text] += 1
            self._count_message(destination, text, concat)
            if status == DROP:
                task = asyncio.create_task(self._drop(event.session_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        if status:
            event.reject(status)
            return
        message_id = next(self._ids)
        event.accept(message_id)
        text, concat = _read(event.short_message, event.esm_class, event.data_coding)
        self.parts[destination, text] += 1
        self.by_id[message_id] = (destination, text)
        self._count_message(destination, text, concat)
        if not self.receipts:
            return
        if event.registered_delivery & 1 and event.session_id in self._queues:
            self._queues[event.session_id].put_nowait((destination, event.source_addr, message_id))

    async def _drop(self, session_id: str) -> None:
        """Drop one session (its connection goes; the client sees it end)."""
        if (session := self._sessions.get(session_id)) is not None:
            await session[0].unbind()

    def _count_message(self, destination: str, text: str, concat: tuple[int, ...]) -> None:
        if not concat or concat[1] <= 1:
            self.messages[destination, text] += 1
            return
        reference, total, number = concat
        parts = self._partial.setdefault((destination, reference, total), {})
        parts[number] = text
        if len(parts) == total:
            del self._partial[destination, reference, total]
            self.messages[destination, "".join(parts[n] for n in sorted(parts))] += 1

    async def _push(self, esme: smpp34.Esme, queue: asyncio.Queue[tuple[str, str, str]]) -> None:
        """Receipts for one session, in the order its submits were accepted."""
        while True:
            destination, source, message_id = await queue.get()
            ok = destination not in self.undelivered
            now = wall_clock().strftime("%y%m%d%H%M")
            receipt = (
                f"id:{message_id} sub:001 dlvrd:{'001' if ok else '000'} submit date:{now} "
                f"done date:{now} stat:{'DELIVRD' if ok else 'UNDELIV'} "
                f"err:{'000' if ok else '001'} text:"
            )
            try:
                await esme.deliver_sm(
                    source, receipt.encode(), source_addr=destination, esm_class=4
                )
            except smpp34.SmppError:
                return


class SmscProcess:
    """`python -m tests.peers.smsc` as a child process: a peer whose connections really drop."""

    def __init__(self, port: int, counts: Path | None = None, *args: str) -> None:
        self.port, self.counts, self.args = port, counts, args
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        command = [sys.executable, "-m", "tests.peers.smsc", "--port", str(self.port), *self.args]
        if self.counts is not None:
            command += ["--counts", str(self.counts)]
        process = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE
        )
        self._process = process
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line.startswith(b"ready"):
            await self.kill()
            raise RuntimeError(f"the fake SMSC did not start: {line!r}")

    async def kill(self) -> None:
        """SIGKILL: every connection drops, nothing is written."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()

    async def stop(self) -> dict[str, Any]:
        """SIGTERM, and the counts it wrote (if it was given a file)."""
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            await self._process.wait()
        if self.counts is None or self._process is None:
            return {}  # nothing given to write to, or never started
        counts: dict[str, Any] = json.loads(self.counts.read_text())
        return counts


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    smsc = FakeSmsc(
        args.port,
        system_id=args.system_id,
        undelivered=filter(None, args.undelivered.split(",")),
        invalid=filter(None, args.invalid.split(",")),
    )
    await smsc.start()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    print(f"ready {smsc.port}", flush=True)
    await stopping.wait()
    await smsc.stop()
    return smsc.counts()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A fake SMSC (SMPP 3.4) for tests.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--system-id", default="hub")
    parser.add_argument("--counts", help="write the counts here as JSON on SIGTERM")
    parser.add_argument("--undelivered", default="", help="destinations, comma-separated")
    parser.add_argument("--invalid", default="", help="destinations, comma-separated")
    options = parser.parse_args()
    counts = asyncio.run(_main(options))
    if options.counts:
        Path(options.counts).write_text(json.dumps(counts, ensure_ascii=False))
