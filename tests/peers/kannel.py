"""A real Kannel 1.4.5 on loopback: bearerbox, smsbox and Kannel's own fake SMSC client.

`kannel(directory, get_url)` writes a kannel.conf into `directory`, starts the three
programs on free ports, waits until the fake SMSC is online and smsbox is connected, and stops
everything on exit. What the fake SMSC receives is parsed from fakesmsc's output, concatenated
parts are joined back, and a test waits for it with `peer.wait_arrived(...)`.

Two fake SMSC connections, because bearerbox's fake SMSC serves one client at a time:
- `mt` (port `mt_port`): one fakesmsc runs all along and receives what the hub submits;
- `mo` (port `mo_port`, `allowed-smsc-id = mo`, so no MT is ever routed to it): `peer.inject`
  runs a fakesmsc for one mobile-originated message, which smsbox hands to the sms-service
  `get_url` (the adapter's `inbound_get_url`).

`HttpListener` is the hub's stand-in for callbacks: a tiny HTTP server recording every request as
the `HttpCallback` the hub would hand to `Gateway.parse_callback`.

`SlowAnswers` sits between the hub and smsbox's sendsms port: requests pass at once, and the
answers on the next connections it is told of come late (the network between the two losing
time), so the hub's request times out after Kannel has taken the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Literal

import httpx

from hub.delivery.gateway import HttpCallback
from tests.peers import require_binary

BEARERBOX = "/usr/sbin/bearerbox"
SMSBOX = "/usr/sbin/smsbox"
FAKESMSC = "/usr/lib/kannel/test/fakesmsc"
PACKAGES = "kannel kannel-extras"

USERNAME = "hub"
# The sendsms-user's `max-messages`: Kannel silently drops the text beyond this many parts.
MAX_PARTS = 20
# How long start-up and waits may take before the helper gives up (a hang guard, not a check).
PATIENCE = 60.0

# fakesmsc logs `Got message 3: <sender receiver type payload>` for each message it receives.
_GOT = re.compile(rb"Got message \d+: <(?P<line>.*)>$")
# A concatenation UDH: length, IE 00 (8-bit reference) of length 3, reference, total, number.
_CONCAT_UDH = re.compile(rb"^\x05\x00\x03(.)(.)(.)$", re.DOTALL)

CONFIG = """\
group = core
admin-port = {admin_port}
admin-interface = 127.0.0.1
admin-password = {admin_password}
smsbox-port = {smsbox_port}
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
dlr-storage = internal

group = smsc
smsc = fake
smsc-id = mt
port = {mt_port}
connect-allow-ip = 127.0.0.1

group = smsc
smsc = fake
smsc-id = mo
port = {mo_port}
connect-allow-ip = 127.0.0.1
allowed-smsc-id = mo

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {smsbox_port}
sendsms-port = {sendsms_port}
sendsms-interface = 127.0.0.1
mo-recode = true

group = sendsms-user
username = {username}
password = {password}
concatenation = true
max-messages = {max_parts}

group = sms-service
keyword = default
catch-all = true
max-messages = 0
get-url = "{get_url}"
"""


class PeerError(Exception):
    """Kannel did not come up (or a program died under the test)."""


def free_port() -> int:
    """A port nothing listens on now, on every interface (the fake SMSC binds 0.0.0.0)."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Part:
    """One SMS as the fake SMSC handed it to fakesmsc."""

    sender: str
    phone: str
    kind: Literal["text", "data", "ucs-2", "udh"]
    udh: bytes
    data: bytes

    @classmethod
    def parse(cls, line: bytes) -> Part:
        """`sender phone text <raw>`, `… data|ucs-2 <url-encoded>` or
        `… udh <url-encoded udh> data <url-encoded>` (smsc_fake says "data" whatever the coding)."""
        sender, phone, kind, payload = line.split(b" ", 3)
        head = sender.decode(), phone.decode()
        if kind == b"text":
            return cls(*head, "text", b"", payload)
        if kind in (b"data", b"ucs-2"):
            return cls(*head, "ucs-2" if kind == b"ucs-2" else "data", b"", _unquote(payload))
        if kind == b"udh":
            udh, _, data = payload.split(b" ", 2)
            return cls(*head, "udh", _unquote(udh), _unquote(data))
        raise ValueError(f"unknown fakesmsc message type {kind!r} in {line!r}")


def _unquote(encoded: bytes) -> bytes:
    """Kannel's url-encoding: a space byte is `+`, a `+` is `%2B`."""
    return urllib.parse.unquote_to_bytes(encoded.replace(b"+", b" "))


@dataclass(frozen=True)
class Arrived:
    """One message as the phone would show it: a single part, or all parts of a concatenation
    joined in order. `data` is the raw user data; `text(coding)` decodes it."""

    sender: str
    phone: str
    parts: int
    coding: Literal["gsm7", "ucs2", "unknown"]
    data: bytes

    def text(self, coding: Literal["gsm7", "ucs2"] | None = None) -> str:
        """The text, decoded as `coding` (needed for concatenated parts, whose coding the fake
        SMSC does not say) or as the single part's own coding."""
        coding = coding or (None if self.coding == "unknown" else self.coding)
        if coding is None:
            raise ValueError("the fake SMSC does not say a concatenation's coding: pass it")
        return self.data.decode("utf-16-be" if coding == "ucs2" else "utf-8")


_SINGLE_CODING: dict[str, Literal["gsm7", "ucs2", "unknown"]] = {"text": "gsm7", "ucs-2": "ucs2"}


def assemble(parts: list[Part]) -> list[Arrived]:
    """Single parts as they are; concatenated parts joined once all of them are in."""
    done: list[Arrived] = []
    pending: dict[tuple[str, str, int, int], dict[int, Part]] = {}
    for part in parts:
        concat = _CONCAT_UDH.match(part.udh)
        if part.kind != "udh" or concat is None:
            coding = _SINGLE_CODING.get(part.kind, "unknown")
            done.append(Arrived(part.sender, part.phone, 1, coding, part.data))
            continue
        reference, total, number = (concat.group(i)[0] for i in (1, 2, 3))
        key = (part.sender, part.phone, reference, total)
        group = pending.setdefault(key, {})
        group[number] = part
        if len(group) == total:
            data = b"".join(group[n].data for n in range(1, total + 1))
            done.append(Arrived(part.sender, part.phone, total, "unknown", data))
            del pending[key]
    return done


class HttpListener:
    """A minimal HTTP/1.1 server on 127.0.0.1 recording each request as an `HttpCallback`
    (with its path), answering `200 ok`: what Kannel's DLR and sms-service calls reach."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, HttpCallback]] = []
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def on(self, path: str) -> list[HttpCallback]:
        return [call for call_path, call in self.calls if call_path == path]

    async def wait_for(
        self, path: str, done: Callable[[list[HttpCallback]], bool]
    ) -> list[HttpCallback]:
        """The calls to `path` once `done(calls)` holds."""
        async with asyncio.timeout(PATIENCE), self._changed:
            await self._changed.wait_for(lambda: done(self.on(path)))
        return self.on(path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = {}
        for header in filter(None, header_lines):
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        path, _, query = target.partition("?")
        parsed = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        call = HttpCallback(method=method, query=parsed, headers=headers, body=body)
        async with self._changed:
            self.calls.append((path, call))
            self._changed.notify_all()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        return headers.get("connection", "").lower() != "close"


class SlowAnswers:
    """A TCP proxy to `port` on 127.0.0.1 (`url` is its own). `hold_next(n, seconds)`: on each of
    the next n connections, what comes back is held that long before it is passed on."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.connections = 0
        self._holds: list[float] = []
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def hold_next(self, connections: int, seconds: float) -> None:
        self._holds += [seconds] * connections

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        hold = self._holds.pop(0) if self._holds else 0.0
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer, 0.0)),
            asyncio.create_task(_pipe(up_reader, writer, hold)),
        ]
        self._pipes.update(pipes)
        for pipe in pipes:
            pipe.add_done_callback(self._pipes.discard)
        await asyncio.gather(*pipes, return_exceptions=True)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, hold: float) -> None:
    try:
        while data := await source.read(65536):
            if hold:
                await asyncio.sleep(hold)
                hold = 0.0
            sink.write(data)
            await sink.drain()
    except ConnectionError:
        pass
    finally:
        sink.close()


@dataclass
class KannelPeer:
    """A running Kannel; `url` is smsbox's sendsms base, as the adapter's `config.url`."""

    directory: Path
    get_url: str  # the sms-service's, escapes included (`KannelGateway.inbound_get_url`)
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    username: str = USERNAME
    ports: dict[str, int] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    _processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['sendsms_port']}"

    def arrived(self, phone: str | None = None) -> list[Arrived]:
        return [a for a in assemble(self.parts) if phone is None or a.phone == phone]

    async def wait_arrived(self, count: int, phone: str | None = None) -> list[Arrived]:
        """Wait until at least `count` whole messages (to `phone`, if given) have arrived."""
        async with asyncio.timeout(PATIENCE), self._changed:
            await self._changed.wait_for(lambda: len(self.arrived(phone)) >= count)
        return self.arrived(phone)

    async def inject(self, phone: str, to: str, text: str) -> None:
        """A mobile-originated SMS from `phone` to `to`, sent as UCS-2 by the fake SMSC."""
        payload = urllib.parse.quote(text.encode("utf-16-be"), safe="")
        message = f"{phone} {to} ucs2 {payload}"
        args = ["-H", "127.0.0.1", "-r", str(self.ports["mo_port"]), "-m", "1", message]
        # One client at a time: the previous one goes (its message was taken long ago), this
        # one stays connected until the next inject or the end, so nothing is cut off mid-way.
        await self._stop("inject")
        process = await self._spawn("inject", FAKESMSC, *args)
        assert process.stdout is not None
        async with asyncio.timeout(PATIENCE):
            async for line in process.stdout:
                if b"fakesmsc: sent message 1" in line:
                    break

    async def start(self) -> None:
        self.ports = {
            name: free_port()
            for name in ("admin_port", "smsbox_port", "mt_port", "mo_port", "sendsms_port")
        }
        config = CONFIG.format(
            **self.ports,
            admin_password=self.password,
            username=self.username,
            password=self.password,
            max_parts=MAX_PARTS,
            get_url=self.get_url,
        )
        conf = self.directory / "kannel.conf"
        conf.write_text(config)
        await self._spawn("bearerbox", BEARERBOX, str(conf))
        await self._until(lambda status: "Status: running" in status)
        await self._spawn("smsbox", SMSBOX, str(conf))
        await self.connect_smsc()
        await self._until(lambda status: "smsbox:" in status.split("Box connections:")[-1])

    async def connect_smsc(self) -> None:
        """Start the fakesmsc receiving MT messages; return once bearerbox has it online."""
        # `-m 0`: send nothing, print what arrives (the message argument is required).
        port = str(self.ports["mt_port"])
        mt = await self._spawn("fakesmsc", FAKESMSC, "-H", "127.0.0.1", "-r", port, "-m", "0", "x")
        self._readers.append(asyncio.create_task(self._read_fakesmsc(mt)))
        await self._until(lambda status: f"FAKE:{port} (online" in status)

    async def disconnect_smsc(self) -> None:
        """Stop that fakesmsc; return once bearerbox knows (and so queues MT messages)."""
        await self._stop("fakesmsc")
        await self._until(lambda status: f"FAKE:{self.ports['mt_port']} (re-connecting" in status)

    async def stop(self) -> None:
        """Stop every program (fake SMSC clients first, bearerbox last)."""
        for name in ("inject", "fakesmsc", "smsbox", "bearerbox"):
            await self._stop(name)
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._readers.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()

    async def status(self) -> str:
        """bearerbox's status page (empty while it does not answer)."""
        url = f"http://127.0.0.1:{self.ports['admin_port']}/status.txt"
        try:
            async with httpx.AsyncClient() as client:
                answer = await client.get(url, params={"password": self.password})
        except httpx.TransportError:
            return ""
        return answer.text

    async def _until(self, ready: Callable[[str], bool]) -> None:
        async with asyncio.timeout(PATIENCE):
            while not ready(await self.status()):
                self._check()
                await asyncio.sleep(0.05)

    def _check(self) -> None:
        """Fail fast when a box died or could not bind a port (bearerbox then runs on without
        that interface, so waiting would never end)."""
        for name in ("bearerbox", "smsbox"):
            process = self._processes.get(name)
            if process is None:
                continue
            log = (self.directory / f"{name}.log").read_text(errors="replace")
            if process.returncode is not None or "Address already in use" in log:
                raise PeerError(f"{name} failed ({process.returncode}):\n{log[-3000:]}")

    async def _spawn(self, name: str, program: str, *args: str) -> asyncio.subprocess.Process:
        """fakesmsc's output is read as it comes; bearerbox and smsbox log to `<name>.log`."""
        output: int | IO[bytes] = asyncio.subprocess.PIPE
        if name in ("bearerbox", "smsbox"):
            output = (self.directory / f"{name}.log").open("wb")
            self._logs.append(output)
        # Its own process group: stopping it stops whatever it started, and nothing else.
        process = await asyncio.create_subprocess_exec(
            program,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,
        )
        self._processes[name] = process
        return process

    async def _stop(self, name: str) -> None:
        process = self._processes.pop(name, None)
        if process is None or process.returncode is not None:
            if process is not None:
                await process.wait()
            return
        # fakesmsc keeps waiting through SIGINT; SIGTERM ends it, and the boxes cleanly.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def _read_fakesmsc(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        with (self.directory / "fakesmsc.log").open("ab") as log:
            async for raw in process.stdout:
                log.write(raw)
                log.flush()
                got = _GOT.search(raw.rstrip(b"\r\n"))
                if got is not None:
                    await self._received(got["line"])

    async def _received(self, line: bytes) -> None:
        async with self._changed:
            try:
                self.parts.append(Part.parse(line))
            except ValueError:
                # A single-part GSM text is written raw, so a line break in it reaches fakesmsc
                # as two lines (two "messages"): the second continues the first.
                last = self.parts[-1] if self.parts else None
                if last is None or last.kind != "text":
                    raise
                self.parts[-1] = replace(last, data=last.data + b"\n" + line)
            self._changed.notify_all()


@contextlib.asynccontextmanager
async def kannel(directory: Path, get_url: str) -> AsyncIterator[KannelPeer]:
    """A Kannel running until the block ends; MO messages go to the sms-service `get_url`."""
    for program in (BEARERBOX, SMSBOX, FAKESMSC):
        require_binary(program, PACKAGES)
    for attempt in range(1, 4):
        peer = KannelPeer(directory / f"kannel-{attempt}", get_url)
        peer.directory.mkdir(parents=True)
        try:
            await peer.start()
            break
        except PeerError:
            # Most likely a free port taken by another test between choosing and binding it.
            await peer.stop()
            if attempt == 3:
                raise
    try:
        yield peer
    finally:
        await peer.stop()
