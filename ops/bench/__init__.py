"""Benchmarks: modules run as `python -m ops.bench.<name>`; numbers in docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from hub.db import with_database
from hub.embedded import EmbeddedPostgres


def run_on_postgres(
    args: argparse.Namespace, main: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
) -> int:
    """`main(args)` against the server of `args.dsn`, or else an embedded PostgreSQL in a
    temporary folder (its admin DSN put in `args.dsn`), stopped and removed afterwards."""
    if args.dsn:
        return asyncio.run(main(args))
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp))
        try:
            args.dsn = with_database(pg.start(), "postgres")
            return asyncio.run(main(args))
        finally:
            pg.stop()
