"""Helpers for driving the real `hub` command in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from hub import calendar

HUB = str(Path(sys.executable).parent / "hub")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any HUB_ variable (as on a newcomer's machine), plus `extra`;
    the hub command reads the test clock (HUB_CLOCK__START) when the tests pinned it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    if calendar.CLOCK.offset:
        env["HUB_CLOCK__START"] = calendar.now().isoformat()
    env.update(extra)
    return env


def run_hub(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HUB, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def key_from(output: str) -> str:
    """The key a command printed on its own line as HUB_API_KEY=…"""
    lines = [line for line in output.splitlines() if line.startswith("HUB_API_KEY=")]
    assert len(lines) == 1, output
    return lines[0].removeprefix("HUB_API_KEY=")


# Every hand-over to an outbox gateway, in `handovers`: the outbox table keeps one row per
# message (its insert does nothing for a message it holds), so a message handed over twice
# shows only here.
RECORD_HANDOVERS = """
CREATE TABLE handovers (
    message_id bigint NOT NULL,
    gateway    text NOT NULL,
    phone      text NOT NULL,
    segments   int NOT NULL,
    at         timestamptz NOT NULL
);
CREATE FUNCTION record_handover() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO handovers VALUES (NEW.message_id, NEW.gateway, NEW.phone, NEW.segments,
                                  clock_timestamp());
    RETURN NEW;
END $$;
CREATE TRIGGER record_handover BEFORE INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION record_handover();
"""
