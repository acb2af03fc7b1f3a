"""Billing: dated, tiered rate cards per carrier.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

from hub.db import run_script

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    -- What a carrier charges the hub, from the first day of `valid_from`'s month until the next
    -- card of that carrier. Bands are tiers of the hub-wide monthly segment volume:
    -- [{"from": 0, "to": 1000000, "price_micros": 45000}, {"from": 1000000, "to": null, …}].
    -- `graduated`: each band's segments at its own price; `volume`: every segment at the price
    -- of the band the month's volume reaches. Checked by hub/billing/pricing.py before insert.
    CREATE TABLE rate_cards (
        id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        carrier           text NOT NULL,
        valid_from        date NOT NULL CHECK (extract(day FROM valid_from) = 1),
        mode              text NOT NULL CHECK (mode IN ('graduated', 'volume')),
        bands             jsonb NOT NULL,
        list_price_micros bigint NOT NULL CHECK (list_price_micros >= 0),
        created_by        text NOT NULL,
        created_at        timestamptz NOT NULL DEFAULT now(),
        UNIQUE (carrier, valid_from)
    );
    """)


def downgrade() -> None:
    run_script("DROP TABLE rate_cards")
