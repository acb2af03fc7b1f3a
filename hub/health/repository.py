"""SQL for worker liveness."""

from __future__ import annotations

from datetime import datetime

import msgspec

# A worker says it is alive; workers silent for a day are forgotten.
BEAT = """
WITH forget AS (DELETE FROM worker_heartbeats WHERE seen_at < now() - interval '1 day')
INSERT INTO worker_heartbeats (worker, started_at, seen_at) VALUES ($1, $2, now())
ON CONFLICT (worker) DO UPDATE SET seen_at = now()
"""


class WorkerRow(msgspec.Struct, frozen=True):
    worker: str
    started_at: datetime
    seen_at: datetime


# Workers heard from within the last $1 seconds, most recent first.
LIVE_WORKERS = """
SELECT worker, started_at, seen_at FROM worker_heartbeats
WHERE seen_at > now() - make_interval(secs => $1)
ORDER BY seen_at DESC
"""
