"""`hub rates add/list`: the operator's rate cards from the command line, on a real database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import clean_env, run_hub

pytestmark = pytest.mark.e2e


def test_add_list_and_refuse(fresh_db: str, tmp_path: Path) -> None:
    env = clean_env(HUB_DB__DSN=fresh_db)
    card = {
        "carrier": "中国电信",
        "valid_from": "2027-01-01",
        "mode": "volume",
        "bands": [
            {"from": 0, "to": 2_000_000, "price_micros": 42_000},
            {"from": 2_000_000, "to": None, "price_micros": 38_000},
        ],
    }
    good = tmp_path / "card.json"
    good.write_text(json.dumps(card, ensure_ascii=False), encoding="utf-8")
    added = run_hub("rates", "add", str(good), env=env)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "中国电信 from 2027-01-01, volume" in added.stdout

    listed = run_hub("rates", "list", "--carrier", "中国电信", env=env)
    assert "0..2000000: 42000, 2000000..: 38000" in listed.stdout

    again = run_hub("rates", "add", str(good), env=env)
    assert again.returncode == 1
    assert "already has a rate card" in again.stdout + again.stderr

    card["bands"][1]["from"] = 2_500_000  # type: ignore[index]
    gap = tmp_path / "gap.json"
    gap.write_text(json.dumps({**card, "valid_from": "2027-02-01"}), encoding="utf-8")
    refused = run_hub("rates", "add", str(gap), env=env)
    assert refused.returncode == 1
    assert "gap between band 1" in refused.stdout + refused.stderr
