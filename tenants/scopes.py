"""What an API key may do. A key holds a set of scopes; each endpoint requires one.

Some kinds of data are shown both by the API and by the dashboard: a send's body and its
recipients' phone numbers, replies and opt-outs, money. `READ_SCOPE` is the one table of what
each is read with, and `grants` the one check: the API's route guards (`tenants.auth.require`)
and the dashboard's pages both ask it, so they cannot come to disagree. A `dashboard:read` key
alone sees its subtree's counts and quota on the dashboard, nothing of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final


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
    # Invite people to a tenant of the subtree, change their roles, disable them (管理).
    USERS_WRITE = "users:write"
    # Approve or reject templates and signatures proposed below (审核). During the transition
    # the scope each review route took before also does (REVIEW_TEMPLATES, REVIEW_SIGNATURES).
    REVIEWS_WRITE = "reviews:write"


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)


class Data(StrEnum):
    """A kind of data the API and the dashboard both show, read with the scope READ_SCOPE names."""

    MESSAGES = "messages"  # sends: their bodies, their recipients' phone numbers and statuses
    REPLIES = "replies"  # replies (phone number, text) and opt-outs (phone number)
    MONEY = "money"  # cost, estimates, list prices, savings, statements and their files
    # The operation log: who changed what, from which address (its page and its export).
    # Administrators' (管理) reading: it names people and addresses and shows settings.
    OPERATIONS = "operations"


READ_SCOPE: Final[Mapping[Data, Scope]] = MappingProxyType(
    {
        Data.MESSAGES: Scope.MESSAGES_READ,
        Data.REPLIES: Scope.MESSAGES_READ,
        Data.MONEY: Scope.BILLING_READ,
        Data.OPERATIONS: Scope.TENANTS_WRITE,
    }
)

# What a route or a page needs: a scope itself, or a kind of data (read with its READ_SCOPE).
Need = Scope | Data
# Either: any one of several needs (the first is the one to name in a refusal).
Needs = Need | tuple[Need, ...]

# Deciding what is proposed below (审核) takes reviews:write. The transition: an API key may still
# decide with the scope its route took before reviews:write existed (templates messages:write,
# signatures tenants:write), so the keys systems hold keep working. A person acts with their
# roles' scopes and needs reviews:write itself: 发送 (messages:write) or 管理 (tenants:write)
# alone approves nothing. A later release drops the keys' fallback (docs/ARCHITECTURE.md,
# "Reviews and administration in the console").
TEMPLATES_REVIEWED_BEFORE: Final = Scope.MESSAGES_WRITE
SIGNATURES_REVIEWED_BEFORE: Final = Scope.TENANTS_WRITE


def reviewing(before: Scope, *, key: bool) -> Needs:
    """What deciding a proposal needs: reviews:write, or for an API key also `before`."""
    return (Scope.REVIEWS_WRITE, before) if key else Scope.REVIEWS_WRITE


def scope_for(need: Needs) -> Scope:
    """The scope a key must hold for `need` (of several, the first: the one to ask for)."""
    if isinstance(need, tuple):
        return scope_for(need[0])
    return READ_SCOPE[need] if isinstance(need, Data) else need


def grants(scopes: frozenset[Scope], need: Needs) -> bool:
    """Whether a key holding `scopes` may have `need` (the API's guards and the dashboard ask);
    of several needs, any one."""
    if isinstance(need, tuple):
        return any(grants(scopes, one) for one in need)
    return scope_for(need) in scopes


def named(need: Needs) -> str:
    """The scope(s) `need` asks for, as a refusal names them: `a:write (or b:write)`."""
    if not isinstance(need, tuple):
        return scope_for(need).value
    first, *others = (scope_for(one).value for one in need)
    return f"{first} (or {', '.join(others)})" if others else first


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


class Role(StrEnum):
    """What a person (hub.users) may do in their tenant's subtree: a set of these."""

    READ = "查看"
    SEND = "发送"
    REVIEW = "审核"
    ADMIN = "管理"
    FINANCE = "财务"


# What every role reads: the read scopes and the dashboard (money is 财务's).
_READ_SCOPES = frozenset(
    {
        Scope.TENANTS_READ,
        Scope.MESSAGES_READ,
        Scope.CONTACTS_READ,
        Scope.QUOTA_READ,
        Scope.DASHBOARD_READ,
    }
)

# The one table of what a role holds, in the scopes API keys carry: a signed-in person is a
# Principal with these scopes, so the API's guards and the dashboard's pages are the one check.
ROLE_SCOPES: Final[Mapping[Role, frozenset[Scope]]] = MappingProxyType(
    {
        Role.READ: _READ_SCOPES,
        Role.SEND: _READ_SCOPES | {Scope.MESSAGES_WRITE, Scope.CONTACTS_WRITE},
        Role.REVIEW: _READ_SCOPES | {Scope.REVIEWS_WRITE},
        Role.ADMIN: _READ_SCOPES
        | {Scope.TENANTS_WRITE, Scope.KEYS_WRITE, Scope.QUOTA_WRITE, Scope.USERS_WRITE},
        Role.FINANCE: _READ_SCOPES | {Scope.BILLING_READ, Scope.BILLING_WRITE},
    }
)

# Roles whose sessions are not usable until the SMS code is entered (hub.users second factor).
SECOND_FACTOR_ROLES: frozenset[Role] = frozenset({Role.ADMIN, Role.REVIEW})


def role_scopes(roles: frozenset[Role]) -> frozenset[Scope]:
    """The scopes a person holding `roles` acts with."""
    held: frozenset[Scope] = frozenset()
    for role in roles:
        held |= ROLE_SCOPES[role]
    return held


def parse_roles(names: list[str]) -> frozenset[Role]:
    """`["管理", "发送"]` (or comma-separated) → the roles. ValueError names a bad one."""
    roles: set[Role] = set()
    for name in (part.strip() for text in names for part in text.split(",")):
        if not name:
            continue
        try:
            roles.add(Role(name))
        except ValueError:
            raise ValueError(
                f"unknown role {name!r}; known: {', '.join(r.value for r in Role)}"
            ) from None
    return frozenset(roles)
