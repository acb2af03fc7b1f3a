"""Keys this process has checked, kept a few seconds and dropped the moment they change.

Every API request used to read its key from PostgreSQL (an acquire and a round trip before the
request's own work). A `KeyCache` keeps the Principal of a key that authenticated, with the
SHA-256 of its secret, for at most `seconds`. `follow_changes` LISTENs on `hub_credentials`
(migration 0044's triggers announce a key's prefix when it is revoked or its scopes, secret or
tenant change, and `*` when any tenant's status, code or path changes: suspension covers a
subtree), and drops what changed as the notification arrives, milliseconds after the commit.

The cache serves nothing while its listener is not connected (at start, after a lost
connection: it is emptied then, since notifications may have been missed), so `seconds` bounds
how stale an answer can be only if a notification is lost with the connection still up. A
lookup that began before a change does not store its (older) answer: every drop bumps a
generation the lookup compares. Behind a transaction pooler LISTEN cannot work, and the hub
keeps no cache (hub.app).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable

import asyncpg

from tenants.keys import Token, hash_secret
from tenants.service import Principal

log = logging.getLogger("tenants.key_cache")

CHANNEL = "hub_credentials"
EVERYTHING = "*"
# Entries before the expired ones are swept out (a key is a few hundred bytes).
MAX_ENTRIES = 10_000


class KeyCache:
    """Principals by key prefix, each with its secret's hash and the moment it expires."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.live = False  # True while the listener is connected
        self.generation = 0
        self._entries: dict[str, tuple[float, bytes, Principal]] = {}

    def get(self, token: Token) -> Principal | None:
        """The cached principal of `token`, or None (not cached, expired, another secret, or
        no listener: ask PostgreSQL)."""
        if not self.live:
            return None
        entry = self._entries.get(token.prefix)
        if entry is None:
            return None
        expires, secret_sha256, principal = entry
        if self.clock() >= expires:
            del self._entries[token.prefix]
            return None
        if not hmac.compare_digest(hash_secret(token.secret), secret_sha256):
            return None
        return principal

    def put(self, token: Token, principal: Principal, generation: int) -> None:
        """Keep what a lookup found, unless something changed since it began (`generation`)."""
        if self.live and generation == self.generation:
            now = self.clock()
            if len(self._entries) >= MAX_ENTRIES:  # keys used once linger until looked up again
                self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
            self._entries[token.prefix] = (now + self.seconds, hash_secret(token.secret), principal)

    def forget(self, prefix: str) -> None:
        """Drop a key (`*`: every key)."""
        self.generation += 1
        if prefix == EVERYTHING:
            self._entries.clear()
        else:
            self._entries.pop(prefix, None)

    def connected(self) -> None:
        self.forget(EVERYTHING)
        self.live = True

    def disconnected(self) -> None:
        self.live = False
        self.forget(EVERYTHING)


async def follow_changes(
    dsn: str, cache: KeyCache, retry_seconds: float = 1.0, ready: asyncio.Event | None = None
) -> None:
    """Keep `cache` in step with `hub_credentials` until cancelled: a connection of its own
    (never a pooled one: LISTEN is session state), opened again after it is lost; while it
    is down the cache serves nothing. `ready` is set once the cache is live (tests)."""
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("key cache: cannot LISTEN (%r); keys are read every request", exc)
            await asyncio.sleep(retry_seconds)
            continue
        try:
            await _listen(conn, cache, ready)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("key cache: LISTEN connection lost (%r)", exc)
        finally:
            cache.disconnected()
            conn.terminate()
        await asyncio.sleep(retry_seconds)


async def _listen(conn: asyncpg.Connection, cache: KeyCache, ready: asyncio.Event | None) -> None:
    """Until `conn` is lost: drop what each notification names."""
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _conn: lost.set())
    await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: cache.forget(payload))
    cache.connected()
    if ready is not None:
        ready.set()
    while not lost.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lost.wait(), timeout=cache.seconds)
        if not lost.is_set():
            # A connection that died without a word (no FIN) shows here.
            await conn.execute("SELECT 1", timeout=5)
