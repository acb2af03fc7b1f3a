"""What an API key may do. A key holds a set of scopes; each endpoint requires one."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    TENANTS_READ = "tenants:read"
    TENANTS_WRITE = "tenants:write"
    KEYS_WRITE = "keys:write"
    MESSAGES_READ = "messages:read"
    MESSAGES_WRITE = "messages:write"
    # Send with `priority: "urgent"`: past quiet hours and ahead of every normal and bulk send.
    # Not implied by messages:write; granted like any scope (a key grants only what it holds).
    MESSAGES_URGENT = "messages:urgent"
    CONTACTS_READ = "contacts:read"
    CONTACTS_WRITE = "contacts:write"
    QUOTA_READ = "quota:read"
    QUOTA_WRITE = "quota:write"
    BILLING_READ = "billing:read"
    BILLING_WRITE = "billing:write"
    DASHBOARD_READ = "dashboard:read"


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)


def parse_scopes(names: list[str]) -> frozenset[Scope]:
    """`["tenants:read", "all"]` → the scopes ("all": every scope). ValueError names a bad one."""
    scopes: set[Scope] = set()
    for name in names:
        if name == "all":
            scopes |= ALL_SCOPES
            continue
        try:
            scopes.add(Scope(name))
        except ValueError:
            raise ValueError(
                f"unknown scope {name!r}; known: all, {', '.join(sorted(ALL_SCOPES))}"
            ) from None
    return frozenset(scopes)
