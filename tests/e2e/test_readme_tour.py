"""The README's five-minute tour, run as written against a real `hub up`.

The tour reads the hour the way a newcomer's shell does (`date`), so this test runs the hub on
the same clock as the shell and asserts what holds at any hour: by day the send is delivered, in
quiet hours it is held until 08:00, exactly as the README says. CI runs the suite again at 23:30
on 31 December and on 29 February (faketime), so both branches run there.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from datetime import datetime
from datetime import time as clock_time
from pathlib import Path

import httpx
import msgspec
import pytest

from hub.calendar import BUSINESS_TZ, TIMESTAMP_PATTERN
from hub.db import ROOT
from tests.e2e.conftest import HUB, free_port
from tests.e2e.test_hub_up import start_hub, stop_hub

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MARK = "@@@ command "


def tour_commands() -> list[str]:
    """The tour's shell block, one entry per command (continuation lines joined)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## A five-minute tour\n\n```sh\n(.*?)```", readme, re.S)
    assert block, "the README has a tour"
    commands: list[str] = []
    for line in block[1].splitlines():
        if commands and commands[-1].endswith("\\"):
            commands[-1] += "\n" + line
        else:
            commands.append(line)
    return commands


def run_tour(workdir: Path, port: int, key: str) -> list[str]:
    """Run the tour in one bash, as a reader would paste it; each command's output."""
    script = []
    for n, command in enumerate(tour_commands()):
        command = command.replace("export HUB_API_KEY=hub_…", f"export HUB_API_KEY={key}")
        command = command.replace("localhost:8000", f"127.0.0.1:{port}")
        command = command.replace(".venv/bin/hub ", f"{HUB} ")
        script.append(f"echo '{MARK}{n}'\n{command}\necho")
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env=tour_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return re.split(rf"{MARK}\d+\n", done.stdout)[1:]


def tour_env() -> dict[str, str]:
    """The reader's shell: no HUB_ variable, and no pinned clock (the tour's `date` is real)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}


def _delivered(port: int, operator_key: str, send_id: int) -> bool:
    """The send's messages all delivered (the operator may read any send); a liveness bound."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = httpx.get(
            f"http://127.0.0.1:{port}/v1/messages/{send_id}",
            headers={"Authorization": f"Bearer {operator_key}"},
            timeout=10,
        ).json()
        if view["statuses"] == {"delivered": 2}:
            return True
        time.sleep(0.2)
    return False


def json_of(output: str) -> dict[str, object]:
    answer: dict[str, object] = msgspec.json.decode(output.strip().encode())
    return answer


def test_the_tour_works_as_written(tmp_path: Path) -> None:
    port = free_port()
    proc, _, key = start_hub(tmp_path / ".hub", port, cwd=tmp_path, env=tour_env())
    try:
        _check_the_tour(tmp_path, port, key)
    finally:
        stop_hub(proc)


def _check_the_tour(tmp_path: Path, port: int, key: str) -> None:
    outputs = run_tour(tmp_path, port, key)
    commands = tour_commands()
    by_text = dict(zip(commands, outputs, strict=True))

    def output_of(fragment: str) -> str:
        [found] = [out for cmd, out in by_text.items() if fragment in cmd]
        return found

    assert json_of(output_of("/readyz"))["status"] == "ok"
    assert "limit 10000000" in output_of("hub quota set")
    unit = json_of(output_of("/children"))
    assert unit["code"] == "510104001"
    # The county's own key sends: quota has room at every level above it.
    sent = json_of(output_of("/v1/messages \\"))
    assert sent["counts"] == {
        "accepted": 2,
        "deduplicated": 0,
        "opted_out": 0,
        "rejected": 1,
        "repeated": 0,
    }, sent
    assert sent["rejected"] == [{"to": "12345", "reason": "invalid"}]
    # What quiet hours do to it, as the README says: held until 08:00, or on its way now.
    view = json_of(output_of("/v1/messages/1 "))
    # Times in the answers are in the one form the README shows: Beijing time, to the µs.
    for when in (sent["due_at"], view["due_at"], view["created_at"]):
        assert re.fullmatch(TIMESTAMP_PATTERN, str(when)), when
    if sent["state"] == "held":
        held = datetime.fromisoformat(str(sent["held_until"])).astimezone(BUSINESS_TZ)
        assert held.timetz().replace(tzinfo=None) == clock_time(8, 0)
        assert view["statuses"] == {"accepted": 2}
    else:  # by day it goes at once, and the send is soon delivered, as the README says
        assert sent["state"] == "queued"
        assert _delivered(port, key, int(str(sent["id"])))
    # An open month's statement is a clear error, and curl -f saves no error as a spreadsheet.
    error = json_of(output_of("/statement "))
    assert error["error"] == "not_found"
    assert "not closed" in str(error["detail"])
    assert output_of("statement.xlsx").strip() == "none yet"
    assert not (tmp_path / "statement.xlsx").exists()
    assert "hub_http_requests" in output_of("/metrics") or "# HELP" in output_of("/metrics")
