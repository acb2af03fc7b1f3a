"""Retention: what the hub erases, when, and what it keeps (issue 15; docs/DATA.md)."""
