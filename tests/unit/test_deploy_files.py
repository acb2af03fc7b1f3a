"""ops/deploy: the environment file is a valid configuration, and the systemd units pass
`systemd-analyze verify` (where systemd is installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hub.settings import load_settings
from tests.peers import require_binary

DEPLOY = Path(__file__).resolve().parents[2] / "ops" / "deploy"
UNITS = ["hub-serve.service", "hub-worker@.service", "hub-migrate.service"]


def _variables(text: str) -> dict[str, str]:
    """Every HUB_ line of an env file, the commented-out examples too."""
    found = {}
    for line in text.splitlines():
        line = line.removeprefix("# ").strip()
        if line.startswith("HUB_") and "=" in line:
            name, value = line.split("=", 1)
            # systemd (and a shell) keeps a single-quoted value as it is, quotes removed.
            quoted = len(value) > 1 and value[0] == value[-1] == "'"
            found[name] = value[1:-1] if quoted else value
    return found


def test_the_example_environment_is_a_valid_configuration() -> None:
    variables = _variables((DEPLOY / "hub.env.example").read_text())
    settings = load_settings(variables)  # an unknown or malformed one raises
    assert settings.http.trusted_proxies
    assert settings.http.secure_cookies is True
    assert settings.http.workers == 2
    assert settings.delivery.gateways[0].name == "cmcc"  # the JSON reached the setting whole


def test_every_unit_names_the_env_file_and_the_hub_command() -> None:
    for name in UNITS:
        unit = (DEPLOY / name).read_text()
        assert "EnvironmentFile=/etc/hub/hub.env" in unit, name
        assert "ExecStart=/opt/hub/.venv/bin/hub " in unit, name


@pytest.mark.parametrize("name", UNITS)
def test_the_units_pass_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", "systemd")
    hub = Path(sys.executable).parent / "hub"
    # The same unit with this checkout's `hub` where /opt/hub would be: verify checks that the
    # command exists and is executable.
    unit = (DEPLOY / name).read_text()
    unit = unit.replace("/opt/hub/.venv/bin/hub", str(hub))
    unit = unit.replace("WorkingDirectory=/opt/hub/src", f"WorkingDirectory={DEPLOY.parents[1]}")
    (tmp_path / name).write_text(unit)
    target = tmp_path / name
    if name.endswith("@.service"):  # a template is verified through an instance of it
        target = tmp_path / name.replace("@.", "@1.")
        target.symlink_to(tmp_path / name)
    checked = subprocess.run(
        [analyze, "verify", str(target)], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stderr
    assert "hub" not in checked.stderr, checked.stderr  # no warning about our unit either
