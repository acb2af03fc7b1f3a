"""Which asyncpg errors mean "PostgreSQL is gone" (503 and a retry) rather than a bug (500)."""

from __future__ import annotations

from asyncpg.exceptions import InterfaceError, InternalClientError

from hub.db import unreachable


def test_a_pooled_connection_left_by_a_shutdown_is_gone() -> None:
    # What tests/e2e/test_postgres_restart.py met as a 500 before: a connection idle in the pool
    # when PostgreSQL stopped, taken by a request before its socket closed.
    left = InternalClientError("cannot switch to state 12; another operation (2) is in progress")
    assert unreachable(left)


def test_two_operations_at_once_on_one_connection_is_a_bug_not_an_outage() -> None:
    busy = InternalClientError("cannot switch to state 12; another operation (12) is in progress")
    assert not unreachable(busy)
    assert not unreachable(
        InterfaceError("cannot perform operation: another operation is in progress")
    )
    assert unreachable(
        InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed")
    )
