"""The quota ledger against a small in-memory model, driven by hypothesis.

Random sequences of limit changes, reservations (direct, or drawn from a lease of the pooled
ancestors' quota), posts, voids, expiries and lease returns run on the real database and on the
model; after every step the balances must agree, and every tenant's whole
subtree must hold no more than its limit. At the end of each sequence the audit must be clean.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from hub.errors import Conflict
from hub.quota import service as quota
from hub.quota.service import QuotaExhausted
from hub.settings import QuotaSettings
from tenants.service import get_by_code
from tests.factories import make_small_tree

# A month to come (a lease of a month already over would be due at once, so none is taken).
NOV = date(2031, 11, 1)
# Leases of 40 segments: the model's sends (1 to 60) draw from them or, as big, go direct.
LEASES = QuotaSettings(lease_block=40, lease_ttl_seconds=3600.0)
PARENT = {
    "000000": None,
    "510000": "000000",
    "510100": "510000",
    "510104": "510100",
    "510105": "510100",
    "520000": "000000",
}
CODES = list(PARENT)
policies = st.sampled_from(["strict", "pooled"])


def _chain(code: str) -> list[str]:
    chain = [code]
    while (parent := PARENT[chain[0]]) is not None:
        chain.insert(0, parent)
    return chain


@dataclass
class Account:
    limit: int = 0
    policy: str = "strict"
    used: int = 0
    reserved: int = 0
    allocated: int = 0

    def available(self) -> int:
        held = self.used + self.reserved + (self.allocated if self.policy == "strict" else 0)
        return max(0, self.limit - held)


@dataclass
class Model:
    # What each tenant's account opens with: (monthly limit, policy).
    defaults: dict[str, tuple[int, str]]
    accounts: dict[str, Account] = field(default_factory=dict)
    # reservation id → (tenant, charged codes, amount)
    pending: dict[int, tuple[str, list[str], int]] = field(default_factory=dict)
    settled: dict[int, tuple[str, int]] = field(default_factory=dict)  # id → (tenant, used)
    # The active lease of each holder: [ancestors it is held on, amount, drawn].
    leases: dict[str, tuple[list[str], int, int]] = field(default_factory=dict)

    def return_lease(self, code: str) -> None:
        above, amount, drawn = self.leases.pop(code)
        for c in above:
            self.accounts[c].reserved -= amount - drawn

    def draw(self, code: str, charged: list[str], amount: int) -> str | None:
        """Reserve from `code`'s lease (leasing a block when it has none with room); the level
        short, if any. Only the holder's account changes when its lease has room."""
        above, own = charged[:-1], self.accounts[code]
        lease = self.leases.get(code)
        if lease is not None and lease[0] == above and lease[1] - lease[2] >= amount:
            if own.available() < amount:
                return code
            self.leases[code] = (above, lease[1], lease[2] + amount)
            own.reserved += amount
            return None
        if own.available() < amount:  # then as a direct reservation: the highest level short
            return next(c for c in charged if self.accounts[c].available() < amount)
        if lease is not None:  # what it held undrawn is the ancestors' again
            self.return_lease(code)
        short = next((c for c in above if self.accounts[c].available() < amount), None)
        if short is not None:
            return short
        # Never more than the holder itself may still reserve.
        room = (self.accounts[c].available() for c in above)
        size = min(LEASES.lease_block, own.available(), *room)
        for c in above:
            self.accounts[c].reserved += size
        self.leases[code] = (above, size, amount)
        own.reserved += amount
        return None

    def open_chain(self, code: str) -> bool:
        """Open missing accounts root first from their defaults (under a strict parent, only
        what fits); True if `code`'s own account was missing."""
        missing = code not in self.accounts
        for level in _chain(code):
            if level in self.accounts:
                continue
            limit, policy = self.defaults[level]
            parent = self.accounts.get(PARENT[level] or "")
            if parent is not None and parent.policy == "strict":
                limit = min(limit, parent.available())
            if parent is not None:
                parent.allocated += limit
            self.accounts[level] = Account(limit=limit, policy=policy)
        return missing


class LedgerMachine(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop
    conn: asyncpg.Connection
    reservations = Bundle("reservations")

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    async def _atomic(self, work: Any) -> Any:
        """One operation in a savepoint, as one request would be in its transaction."""
        async with self.conn.transaction():
            return await work

    @initialize(
        defaults=st.fixed_dictionaries(
            {code: st.tuples(st.integers(0, 150), policies) for code in CODES}
        )
    )
    def start(self, defaults: dict[str, tuple[int, str]]) -> None:
        self.model = Model(defaults=defaults)
        self.outer = self.conn.transaction()
        self.run(self.outer.start())
        self.run(make_small_tree(self.conn))
        self.tenants = {code: self.run(get_by_code(self.conn, code)) for code in CODES}
        for code, (limit, policy) in defaults.items():
            self.run(quota.set_defaults(self.conn, self.tenants[code], limit, policy, "model"))

    def teardown(self) -> None:
        if hasattr(self, "outer"):
            try:
                _, problems = self.run(quota.audit(self.conn, NOV))
                assert problems == []
            finally:
                self.run(self.outer.rollback())

    @rule(code=st.sampled_from(CODES), limit=st.integers(0, 200), policy=st.none() | policies)
    def set_limit(self, code: str, limit: int, policy: str | None) -> None:
        model = copy.deepcopy(self.model)
        just_opened = model.open_chain(code)
        account = model.accounts[code]
        parent = model.accounts.get(PARENT[code] or "")
        new_policy = policy or account.policy
        delta = limit - account.limit

        def held() -> int:
            strict = new_policy == "strict"
            return account.used + account.reserved + (account.allocated if strict else 0)

        if limit < held():  # the leases its descendants hold on it go back first
            for holder in [h for h, lease in model.leases.items() if code in lease[0]]:
                model.return_lease(holder)
        loosens = not just_opened and account.policy == "strict" and new_policy == "pooled"
        overgrants = (
            parent is not None
            and parent.policy == "strict"
            and 0 < delta
            and delta > parent.available()
        )
        refused = loosens or limit < held() or overgrants
        work = quota.set_limit(
            self.conn, self.tenants[code], NOV, "model", limit=limit, policy=policy
        )
        try:
            self.run(self._atomic(work))
        except Conflict:
            assert refused, f"set_limit({code}, {limit}, {policy}) refused, model allows it"
            return
        assert not refused, f"set_limit({code}, {limit}, {policy}) allowed, model refuses it"
        account.limit, account.policy = limit, new_policy
        if parent is not None:
            parent.allocated += delta
        self.model = model

    @rule(
        target=reservations,
        code=st.sampled_from(CODES),
        amount=st.integers(1, 60),
        leased=st.booleans(),
    )
    def reserve(self, code: str, amount: int, leased: bool) -> int:
        model = copy.deepcopy(self.model)
        model.open_chain(code)
        chain = _chain(code)
        charged = [c for c in chain[:-1] if model.accounts[c].policy == "pooled"] + [code]
        draws = leased and len(charged) > 1 and amount < LEASES.lease_block
        if draws:
            short = model.draw(code, charged, amount)
        else:
            short = next((c for c in charged if model.accounts[c].available() < amount), None)
        work = quota.reserve(
            self.conn,
            self.tenants[code],
            amount,
            "model",
            "model",
            ttl_seconds=3600,
            period=NOV,
            leases=LEASES if leased else None,
        )
        try:
            reservation = self.run(self._atomic(work))
        except QuotaExhausted as exc:
            refused_at = exc.extra["tenant"]
        else:
            refused_at = None
        assert refused_at == short, f"DB refused at {refused_at}, model at {short}"
        if short is not None:
            return -1
        for c in charged if not draws else []:
            model.accounts[c].reserved += amount
        model.pending[reservation.id] = (code, charged, amount)
        self.model = model
        return int(reservation.id)

    def _settle(self, reservation_id: int, used: int | None) -> None:
        code, charged, amount = self.model.pending.pop(reservation_id)
        for c in charged:
            self.model.accounts[c].reserved -= amount
            self.model.accounts[c].used += used or 0
        self.model.settled[reservation_id] = (code, used or 0)

    @rule(reservation=consumes(reservations), share=st.floats(0, 1))
    def post(self, reservation: int, share: float) -> None:
        if reservation not in self.model.pending:
            return
        amount = self.model.pending[reservation][2]
        used = int(amount * share)
        assert self.run(self._atomic(quota.post(self.conn, reservation, used, "model")))
        self._settle(reservation, used)
        assert not self.run(self._atomic(quota.post(self.conn, reservation, used, "model")))

    @rule(reservation=consumes(reservations))
    def void(self, reservation: int) -> None:
        if reservation not in self.model.pending:
            return
        assert self.run(self._atomic(quota.void(self.conn, reservation, "model")))
        self._settle(reservation, None)

    @rule(reservation=consumes(reservations))
    def expire(self, reservation: int) -> None:
        if reservation not in self.model.pending:
            return
        self.run(
            self.conn.execute(
                "UPDATE quota_reservations SET expires_at = hub_now() - interval '1 second' "
                "WHERE id = $1",
                reservation,
            )
        )
        assert self.run(self._atomic(quota.expire_due(self.conn))) == 1
        self._settle(reservation, None)

    @rule()
    def return_leases(self) -> None:
        """Every active lease falls due and the sweeper returns it."""
        self.run(
            self.conn.execute(
                "UPDATE quota_leases SET expires_at = hub_now() - interval '1 second' "
                "WHERE status = 'active'"
            )
        )
        due = len(self.model.leases)
        assert self.run(self._atomic(quota.return_due_leases(self.conn))) == due
        for code in list(self.model.leases):
            self.model.return_lease(code)

    @invariant()
    def balances_agree(self) -> None:
        if not hasattr(self, "outer"):
            return
        rows = self.run(
            self.conn.fetch(
                "SELECT t.code, a.limit_segments, a.policy::text AS policy, a.used, a.reserved, "
                "a.allocated FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id "
                "WHERE a.period = $1",
                NOV,
            )
        )
        db = {
            r["code"]: Account(
                r["limit_segments"], r["policy"], r["used"], r["reserved"], r["allocated"]
            )
            for r in rows
        }
        assert db == self.model.accounts

    @invariant()
    def no_subtree_over_its_limit(self) -> None:
        held: dict[str, int] = dict.fromkeys(CODES, 0)
        for code, _, amount in self.model.pending.values():
            for level in _chain(code):
                held[level] += amount
        for code, used in self.model.settled.values():
            for level in _chain(code):
                held[level] += used
        for code, account in self.model.accounts.items():
            assert held[code] <= account.limit, f"{code} subtree holds {held[code]}"


class PooledLedgerMachine(LedgerMachine):
    """The same with every level pooled and roomy: most sends lease, draw and return."""

    @initialize(
        defaults=st.fixed_dictionaries(
            {code: st.tuples(st.integers(40, 300), st.just("pooled")) for code in CODES}
        )
    )
    def start(self, defaults: dict[str, tuple[int, str]]) -> None:
        LedgerMachine.start(self, defaults)


@pytest.mark.parametrize("machine", [LedgerMachine, PooledLedgerMachine])
def test_ledger_matches_its_model(db_dsn: str, machine: type[LedgerMachine]) -> None:
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(db_dsn))
    machine.loop, machine.conn = loop, conn
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=40,
                stateful_step_count=30,
                deadline=None,
                derandomize=True,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(conn.close())
        loop.close()
