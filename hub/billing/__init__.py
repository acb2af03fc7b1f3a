"""Billing: rate cards, usage, the period close, statements and exports."""
