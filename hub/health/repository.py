"""SQL for worker liveness."""

from __future__ import annotations

# A worker says it is alive; workers silent for a day are forgotten.
BEAT = """
WITH forget AS (DELETE FROM worker_heartbeats WHERE seen_at < hub_now() - interval '1 day')
INSERT INTO worker_heartbeats (worker, started_at, seen_at) VALUES ($1, $2, hub_now())
ON CONFLICT (worker) DO UPDATE SET seen_at = hub_now()
"""
