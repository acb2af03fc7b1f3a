"""Which asyncpg errors mean "PostgreSQL is gone" (503 and a retry) rather than a bug (500)."""

from __future__ import annotations

from asyncpg.exceptions import InterfaceError, InternalClientError, QueryCanceledError

from hub.db import unreachable
from hub.errors import RETRY_AFTER_SLOW, outage


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


def test_a_statement_out_of_time_is_a_busy_database_not_a_bug() -> None:
    """A million-recipient send while others deliver can outrun HUB_DB__STATEMENT_TIMEOUT: its
    transaction is undone, and the client is told to come back (503 busy), not a 500."""
    slow = QueryCanceledError("canceling statement due to statement timeout")
    found = outage(slow)
    assert found is not None
    assert (found.code, found.headers) == ("busy", {"Retry-After": str(RETRY_AFTER_SLOW)})
    assert outage(ValueError("a bug")) is None
