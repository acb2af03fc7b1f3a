"""ops/bench/console_pages.py at a small scale: the benchmark still seeds, signs its two people
in and opens every page and download with 200 (deselected by default: `-m benchmark`). It
times nothing here; the numbers are the benchmark's own, in docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hub.db import ROOT

pytestmark = [pytest.mark.benchmark, pytest.mark.slow, pytest.mark.timeout(900)]


def test_every_console_page_answers_at_a_small_scale(pg_admin_dsn: str, redis_dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.bench.console_pages",
            *("--dsn", pg_admin_dsn, "--redis", redis_dsn),
            *("--database", f"hub_bench_console_{os.getpid()}"),
            *("--contacts", "2000", "--sends", "80", "--others", "200"),
            *("--other-counties", "3", "--repeat", "1", "--export-repeat", "1"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "pages over 300 ms" in run.stdout
