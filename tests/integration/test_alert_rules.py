"""ops/prometheus/alerts.yml: valid for Prometheus (`promtool check rules`), each alert firing
and staying quiet as alerts.test.yml expects (`promtool test rules`), and naming only metrics a
real scrape of the hub exports, so no rule can silently watch a dead name."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import asyncpg
import httpx

from tests.factories import bearer, grant, make_key, make_small_tree
from tests.integration.test_metrics import scrape
from tests.peers import require_binary

RULES = Path(__file__).parents[2] / "ops" / "prometheus"
METRIC = re.compile(r"\bhub_[a-z0-9_]+\b")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("/usr/bin/promtool", "prometheus")
    return subprocess.run(
        [promtool, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


def _names(path: Path) -> set[str]:
    """The hub_ metric names a YAML file uses, comments left out."""
    text = "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    return set(METRIC.findall(text))


def test_promtool_finds_the_rules_valid() -> None:
    checked = _promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_each_alert_fires_and_stays_quiet_as_its_unit_tests_say() -> None:
    tested = _promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    # Every alert has its tests: a rule added without them is caught here.
    alerts = set(re.findall(r"^\s+- alert: (\w+)", (RULES / "alerts.yml").read_text(), re.M))
    tests = (RULES / "alerts.test.yml").read_text()
    tested_alerts = set(re.findall(r"alertname: (\w+)", tests))
    assert alerts == tested_alerts
    for alert in alerts:  # each one both fires and stays quiet somewhere
        blocks = re.findall(rf"alertname: {alert}\n\s+exp_alerts:(.*)", tests)
        assert "[]" in [b.strip() for b in blocks], f"{alert} is never shown quiet"
        assert "" in [b.strip() for b in blocks], f"{alert} is never shown firing"


async def test_every_metric_the_rules_use_is_exported(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    await grant(conn, {"000000": 1000, "510000": 500, "510100": 300, "510104": 100})
    key = await make_key(conn, "510104")
    sent = await client.post(
        "/v1/messages", json={"to": ["13800000001"], "body": "通知"}, headers=bearer(key)
    )
    assert sent.status_code == 202, sent.text
    exported = set(await scrape(client))
    names = {sample.partition("{")[0] for sample in exported}
    used = _names(RULES / "alerts.yml")
    assert used, "no hub_ metric found in the rules"
    assert used - names == set()
    # The unit tests feed series under the same names.
    assert _names(RULES / "alerts.test.yml") - names == set()
