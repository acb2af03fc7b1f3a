"""ops/bench/national_month.py at a small scale (deselected by default: `-m benchmark`): one
province's tree and a month of 20,000 messages by COPY, whose quota ledger the hub's own audit
finds clean and whose usage rollup bills what the quota used; then every measure runs once on
the empty and the national hub. It times nothing here; the numbers are the benchmark's own,
in docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from hub.db import ROOT

pytestmark = [pytest.mark.benchmark, pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_small_national_month_is_consistent_and_measured(pg_admin_dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.bench.national_month",
            *("--dsn", pg_admin_dsn, "--prefix", f"hub_bench_national_{os.getpid()}"),
            *("--tenants", "51", "--messages", "20000", "--repeat", "1"),
            *("--delivery-messages", "500", "--send-recipients", "500"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert re.search(r"quota audit of \d{4}-\d{2}: \d+ accounts, clean", out), out
    used = re.search(r"segments used by quota ([\d,]+), billable by usage ([\d,]+)", out)
    assert used is not None, out
    assert used[1] == used[2], out
    assert used[1] != "0", out
    assert "national hub 20," in out  # every message of the month, and the measures' sends
    for measure in ("dashboard national page", "/v1/usage root", "close ", "XLSX export"):
        assert re.search(rf"^{re.escape(measure)}.* \d+\.\d\dx", out, re.M), measure
    assert re.search(r"^outbox delivery, segments/s .* \d+\.\d\dx", out, re.M), out
    assert re.search(r"messages_\d{4}_\d{2} +empty +0 MB +national", out), out
