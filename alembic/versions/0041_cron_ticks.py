"""Cron ticks (issue 16, point 1): each periodic job runs once per scheduled tick across every
worker. arq's own dedup (a unique job id in Redis) is lost when Redis is flushed; this row is
not. A worker inserts (name, tick) before it runs the job and runs it only if it inserted
(hub.crons). Rows older than a week go with the purge (hub.dedup.jobs.purge_expired).

Revision ID: 0041
Revises: 0040
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0041"
down_revision = "0040"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TABLE IF NOT EXISTS cron_ticks (
        name        text NOT NULL,         -- the cron's arq name, e.g. hub.delivery.sweep.cron
        tick        timestamptz NOT NULL,  -- its scheduled instant, to the second
        worker      text NOT NULL,         -- host:pid of the worker that ran it
        started_at  timestamptz NOT NULL DEFAULT hub_now(),
        finished_at timestamptz,           -- NULL: running, or it failed
        PRIMARY KEY (name, tick)
    );
    CREATE INDEX IF NOT EXISTS cron_ticks_tick ON cron_ticks (tick);
    """)


def downgrade() -> None:
    run_script("DROP TABLE cron_ticks;")
