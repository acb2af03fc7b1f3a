"""The `outbox` gateway, the default of `hub up`: it records each message in the hub's own
`outbox` table (once per message, however often it is retried) and then reports it delivered,
as a carrier would, through the same receipt path as every other gateway.

Options, for trying failure paths without a carrier: `receipt_delay` (seconds, default 0.2)
before the receipts go out; `undelivered_suffix` (phones ending in it get an `undelivered`
receipt); `refused_suffix` (phones ending in it are refused at submit, for good, as a carrier
refuses a number it does not serve).

Its receipts are not lost when PostgreSQL or the worker is down as it reports them: each
message it takes queues its receipt (`outbox_pending`, in the statement that takes it, a retry
included), the report deletes it once the hub recorded the receipt, and those left
(`REPORT_AGAIN_AFTER_SECONDS` old) are reported again every `REPORT_AGAIN_EVERY_SECONDS` by
every running worker (a repeated receipt changes nothing; one whose outbox row was erased
meanwhile reads as delivered). The outbox can be asked, so a message closed as "outcome
unknown" that it holds gets its reference and its receipt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Literal

from hub.db import Database, unreachable
from hub.delivery import repository as sql
from hub.delivery.gateway import (
    Accepted,
    Events,
    Failed,
    HttpCallback,
    Outbound,
    Outcome,
    Parsed,
    Receipt,
)
from hub.settings import GatewayConfig

log = logging.getLogger(__name__)
RECORD_WAIT_SECONDS = 10.0
# Without word from its worker, how often a report asks whether its messages are recorded.
POLL_SECONDS = 0.5
# Unreported rows older than this are taken as lost (the normal report comes in about a second;
# a report waits at most RECORD_WAIT_SECONDS for the hub to record its messages).
REPORT_AGAIN_AFTER_SECONDS = 15.0
REPORT_AGAIN_EVERY_SECONDS = 5.0
REPORT_AGAIN_BATCH = 1000


class OutboxGateway:
    def __init__(self, config: GatewayConfig, db: Database) -> None:
        self.config, self.db = config, db
        self.receipt_delay = float(config.options.get("receipt_delay", 0.2))
        self.undelivered_suffix = str(config.options.get("undelivered_suffix", ""))
        self.refused_suffix = str(config.options.get("refused_suffix", ""))
        self.events: Events | None = None
        self._pending: set[asyncio.Task[None]] = set()
        # The chunks whose receipts wait for the hub's record of them, by message id.
        self._unrecorded: dict[int, asyncio.Event] = {}
        self._again: asyncio.Task[None] | None = None

    async def start(self, events: Events) -> None:
        self.events = events
        self._again = asyncio.create_task(self._report_again_forever())

    async def submit(self, messages: Sequence[Outbound]) -> list[Outcome]:
        refused = [
            m for m in messages if self.refused_suffix and m.phone.endswith(self.refused_suffix)
        ]
        messages = [m for m in messages if m not in refused]
        try:
            async with self.db.acquire() as conn:
                await conn.execute(
                    sql.OUTBOX_INSERT,
                    [m.id for m in messages],
                    [self.config.name] * len(messages),
                    [m.phone for m in messages],
                    [m.sender for m in messages],
                    [m.text for m in messages],
                    [m.segments for m in messages],
                )
        except Exception as exc:
            if not unreachable(exc):
                raise
            # The outbox is the hub's own table: with PostgreSQL gone nothing went out, or the
            # insert committed unseen and doing it again adds nothing. So the messages go again
            # (the adapters' ConnectionError), never "outcome unknown", which would leave a
            # message the outbox never took `sent` for good.
            raise ConnectionError(f"outbox {self.config.name}: PostgreSQL unreachable") from exc
        outcomes: list[Outcome] = [Accepted(m.id, f"outbox-{m.id}") for m in messages]
        outcomes += [
            Failed(m.id, True, "REFUSED", "the outbox refuses this number", per_recipient=True)
            for m in refused
        ]
        if self.events is not None and messages:
            receipts = [self._receipt(m.id, m.phone) for m in messages]
            record_done = asyncio.Event()
            self._unrecorded.update((m.id, record_done) for m in messages)
            task = asyncio.create_task(self._report(receipts, record_done))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return outcomes

    def _receipt(self, message_id: int, phone: str) -> Receipt:
        failed = bool(self.undelivered_suffix) and phone.endswith(self.undelivered_suffix)
        return Receipt(
            reference=f"outbox-{message_id}",
            status="undelivered" if failed else "delivered",
            code="UNDELIV" if failed else "DELIVRD",
        )

    def recorded(self, ids: Sequence[int]) -> None:
        for message_id in ids:
            if (chunk := self._unrecorded.pop(message_id, None)) is not None:
                chunk.set()

    async def _report(self, receipts: list[Receipt], record_done: asyncio.Event) -> None:
        """Report once the hub has recorded the messages as sent, as a carrier's receipt comes
        after its answer to the submit: when its worker says so (`recorded`), else after asking
        PostgreSQL every POLL_SECONDS (its record failed, or is slow) for at most
        RECORD_WAIT_SECONDS."""
        ids = [int(r.reference.removeprefix("outbox-")) for r in receipts]
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(self.receipt_delay)
            deadline = loop.time() + RECORD_WAIT_SECONDS
            while loop.time() < deadline:
                try:
                    await asyncio.wait_for(record_done.wait(), POLL_SECONDS)
                    break
                except TimeoutError:
                    pass
                async with self.db.acquire() as conn:
                    if not await conn.fetchval(sql.ANY_STILL_SENDING, ids, *sql.bounds(ids)):
                        break
            await self._record(ids, receipts)
        except Exception as exc:
            # Kept: the rows stay unreported, and _report_again_forever reports them again.
            log.warning("outbox %s: receipts not recorded yet (%r)", self.config.name, exc)
        finally:
            for message_id in ids:  # never a later chunk's wait for the same message
                if self._unrecorded.get(message_id) is record_done:
                    del self._unrecorded[message_id]

    async def _record(self, ids: list[int], receipts: list[Receipt]) -> None:
        """Apply `receipts`, first giving their references to messages recorded as sent with
        none (the sweeper closed their chunk as unknown when it outlived its lease): otherwise
        the receipts would find no message and be kept as unmatched."""
        assert self.events is not None
        async with self.db.acquire() as conn:
            await conn.execute(sql.OUTBOX_KNOWN_REFERENCE, ids, *sql.bounds(ids))
        await self.events.receipts(self.config.name, receipts)
        async with self.db.acquire() as conn:
            await conn.execute(sql.OUTBOX_REPORTED, ids, *sql.bounds(ids))

    async def report_again(self, older_than: float = REPORT_AGAIN_AFTER_SECONDS) -> int:
        """Report the receipts the hub has not recorded (see the module); how many."""
        async with self.db.acquire() as conn:
            rows = await conn.fetch(
                sql.OUTBOX_UNREPORTED, self.config.name, older_than, REPORT_AGAIN_BATCH
            )
            ids = [r["id"] for r in rows]
        if ids:
            await self._record(ids, [self._receipt(r["id"], r["phone"]) for r in rows])
            log.info("outbox %s: %d receipts reported again", self.config.name, len(ids))
        return len(ids)

    async def _report_again_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_AGAIN_EVERY_SECONDS)
            try:
                while await self.report_again() == REPORT_AGAIN_BATCH:
                    pass
            except Exception as exc:  # PostgreSQL away: the next round tries again
                log.warning("outbox %s: receipts not reported again (%r)", self.config.name, exc)

    def parse_callback(self, kind: Literal["receipts", "inbound"], call: HttpCallback) -> Parsed:
        raise ValueError("the outbox gateway reports on its own; it takes no callbacks")

    async def close(self) -> None:
        if self._again is not None:
            self._again.cancel()
            await asyncio.gather(self._again, return_exceptions=True)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def build(config: GatewayConfig, db: Database) -> OutboxGateway:
    return OutboxGateway(config, db)
