from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hub.settings import Settings, SettingsError, load_settings


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.db.dsn is None
    assert settings.data_dir == ".hub"


def test_double_underscore_nests_and_values_are_converted() -> None:
    settings = load_settings(
        {"HUB_DB__DSN": "postgresql://x/y", "HUB_DB__POOL_MAX": "7", "HUB_HTTP__DEBUG": "true"}
    )
    assert settings.db.dsn == "postgresql://x/y"
    assert settings.db.pool_max == 7
    assert settings.http.debug is True


@pytest.mark.parametrize("name", ["HUB_DB__DNS", "HUB_COLOUR", "HUB_DB", "HUB_DB__DSN__X"])
def test_unknown_variable_is_an_error_naming_it(name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: "x"})


def test_client_and_test_variables_are_not_settings() -> None:
    settings = load_settings({"HUB_API_KEY": "hub_x", "HUB_TEST_DB__DSN": "postgresql://t"})
    assert settings == Settings()


def test_wrong_type_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="HUB_DB__POOL_MAX"):
        load_settings({"HUB_DB__POOL_MAX": "many"})


def test_out_of_range_is_rejected() -> None:
    with pytest.raises(SettingsError, match="HUB_HTTP__PORT"):
        load_settings({"HUB_HTTP__PORT": "70000"})


def test_cli_refuses_to_start_with_an_unknown_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["HUB_DB__DSM"] = "postgresql://typo"
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "migrate"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "HUB_DB__DSM" in result.stderr


def test_a_metrics_token_a_header_cannot_carry_is_refused() -> None:
    """A Bearer header is ASCII: a token with other characters would lock Prometheus out."""
    assert load_settings({"HUB_HTTP__METRICS_TOKEN": "tok-123_ok"}).http.metrics_token
    for token in ("tok-ÄÖ-secret", "with space", "tab\there"):
        with pytest.raises(SettingsError, match="HUB_HTTP__METRICS_TOKEN"):
            load_settings({"HUB_HTTP__METRICS_TOKEN": token})
