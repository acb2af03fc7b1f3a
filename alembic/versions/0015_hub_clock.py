"""One clock for SQL and Python: hub_now(), and the quota functions' source in their domain.

Every statement that asks the time calls hub_now(): PostgreSQL's now() shifted by the
connection setting `hub.clock_offset` when the hub's clock is shifted (tests, drills; see
hub/calendar.py), and now() itself otherwise. Column defaults follow, so a row's own times agree
with the times the hub compares them to.

quota_reserve and quota_settle_parts now live in hub/quota/sql/ and are loaded from there.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from hub.db import run_script, sql_file

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

FUNCTIONS = ("hub/quota/sql/reserve.sql", "hub/quota/sql/settle_parts.sql")

# Every column whose default is now() (or, going down, hub_now()) gets the other one.
SWAP_DEFAULTS = """
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT table_name, column_name FROM information_schema.columns
             WHERE table_schema = 'public' AND column_default = '{old}'
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I SET DEFAULT {new}',
                       c.table_name, c.column_name);
    END LOOP;
END
$$;
"""


def upgrade() -> None:
    run_script("""
    CREATE FUNCTION hub_now() RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $$
        SELECT now() + coalesce(nullif(current_setting('hub.clock_offset', true), ''),
                                '0 seconds')::interval
    $$;
    """)
    run_script(SWAP_DEFAULTS.format(old="now()", new="hub_now()"))
    for path in FUNCTIONS:
        run_script(sql_file(path))


def downgrade() -> None:
    for path in FUNCTIONS:
        run_script(sql_file(path).replace("hub_now()", "now()"))
    run_script(SWAP_DEFAULTS.format(old="hub_now()", new="now()"))
    run_script("DROP FUNCTION hub_now")
