"""The dashboard's pure parts: money and rate formatting, the limit field, the chart, settings."""

from __future__ import annotations

import logging
from datetime import date

import pytest

from hub.dashboard.controllers import _safe_next, number, permille, warn_retired_secret, yuan
from hub.dashboard.repository import DaySegments
from hub.dashboard.schemas import Delivery, QuotaBar
from hub.dashboard.service import chart, parse_limit
from hub.errors import Invalid
from hub.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("micros", "shown"),
    [
        (0, "¥0.00"),
        (4_999, "¥0.00"),
        (5_000, "¥0.01"),
        (1_234_567, "¥1.23"),
        (-60_000, "-¥0.06"),
        (123_456_789_000, "¥123,456.79"),
    ],
)
def test_yuan_rounds_to_the_fen(micros: int, shown: str) -> None:
    assert yuan(micros) == shown


def test_numbers_and_rates() -> None:
    assert number(1234567) == "1,234,567"
    assert permille(None) == "—"
    assert permille(929) == "92.9%"
    assert Delivery(552, 42).permille == 929
    assert Delivery().permille is None


@pytest.mark.parametrize(("text", "value"), [("7000", 7000), (" 7,000 ", 7000), ("0", 0)])
def test_limit_field_accepts_whole_numbers(text: str, value: int) -> None:
    assert parse_limit(text) == value


@pytest.mark.parametrize("text", ["", "-5", "1.5", "lots", "1e6", "10000000000001"])
def test_limit_field_refuses_anything_else(text: str) -> None:
    with pytest.raises(Invalid):
        parse_limit(text)


def test_quota_alerts_at_80_and_100_percent() -> None:
    assert QuotaBar(1000, 799, 0).alert == 0
    assert QuotaBar(1000, 700, 100).alert == 80
    assert QuotaBar(1000, 1000, 0).alert == 100
    assert QuotaBar(0, 0, 0).alert == 0


def test_chart_has_a_bar_per_day_scaled_to_the_busiest() -> None:
    drawn = chart(
        date(2026, 2, 1), [DaySegments(date(2026, 2, 3), 50), DaySegments(date(2026, 2, 4), 100)]
    )
    assert len(drawn.bars) == 28
    assert drawn.top == 100
    assert drawn.bars[3].height == drawn.height
    assert drawn.bars[2].height == drawn.height // 2
    assert drawn.bars[0].height == 0


def test_only_dashboard_paths_are_returned_to() -> None:
    assert _safe_next("/dashboard/t/510000") == "/dashboard/t/510000"
    for target in ["https://evil.example/", "//evil.example/dashboard/", "/v1/me", "/dashboard\\x"]:
        assert _safe_next(target) == ""


def test_session_lengths_are_settings() -> None:
    rules = load_settings(
        {"HUB_DASHBOARD__SESSION_HOURS": "8", "HUB_DASHBOARD__IDLE_MINUTES": "15"}
    ).dashboard
    assert (rules.session_hours, rules.idle_minutes) == (8, 15)
    assert load_settings({}).dashboard.idle_minutes == 60
    with pytest.raises(SettingsError, match="HUB_DASHBOARD__IDLE_MINUTES"):
        load_settings({"HUB_DASHBOARD__IDLE_MINUTES": "0"})


def test_the_retired_secret_still_starts_but_is_called_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Sessions are rows in PostgreSQL now: an old configuration that sets the secret starts,
    # and the server says the secret is ignored.
    settings = load_settings({"HUB_DASHBOARD__SECRET": "short"})
    with caplog.at_level(logging.WARNING, logger="hub.dashboard"):
        warn_retired_secret(settings)
    assert "HUB_DASHBOARD__SECRET is no longer used" in caplog.text
    caplog.clear()
    warn_retired_secret(load_settings({}))
    assert caplog.text == ""
