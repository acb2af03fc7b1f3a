"""Billing SQL."""

from __future__ import annotations

_CARD = (
    "id, carrier, valid_from, mode, bands::text AS bands, list_price_micros, created_by, created_at"
)

# A new rate card; nothing if the carrier already has one from that month.
INSERT_CARD = f"""
INSERT INTO rate_cards (carrier, valid_from, mode, bands, list_price_micros, created_by)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)
ON CONFLICT (carrier, valid_from) DO NOTHING
RETURNING {_CARD}
"""

# Every card (of carrier $1, if given), newest first per carrier.
CARDS = f"""
SELECT {_CARD} FROM rate_cards
WHERE $1::text IS NULL OR carrier = $1
ORDER BY carrier, valid_from DESC
"""

# The card in force for carrier $1 in the month starting $2.
CARD_IN_FORCE = f"""
SELECT {_CARD} FROM rate_cards
WHERE carrier = $1 AND valid_from <= $2
ORDER BY valid_from DESC
LIMIT 1
"""
