"""People's accounts: what the API and the console's forms take and answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from tenants.scopes import Role

# Signed in with; unique hub-wide whatever its case (the table's users_login index).
Login = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{2,63}$",
        description="3 to 64 letters, digits, `.`, `_`, `@` or `-`; unique whatever its case",
    ),
]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
# As people write it; it must be a mainland mobile (normalised to E.164).
PhoneText = Annotated[str, msgspec.Meta(min_length=5, max_length=30)]
# Long enough for any passphrase, short enough that hashing it is no denial of service.
Password = Annotated[str, msgspec.Meta(max_length=128)]
Roles = Annotated[list[Role], msgspec.Meta(min_length=1, max_length=5)]


class InviteIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    login: Login
    display_name: DisplayName
    phone: PhoneText
    roles: Roles


class UpdateUser(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    roles: Roles | None = None
    disabled: bool | None = None


class User(msgspec.Struct, frozen=True, kw_only=True):
    login: str
    tenant_code: str
    display_name: str
    # The mainland mobile where the second factor's codes go, masked: 138****1234.
    phone: str
    roles: list[Role]
    # False until the invite is accepted (a password set).
    active: bool
    disabled: bool
    locked_until: datetime | None
    created_at: datetime
    created_by: str


class UserList(msgspec.Struct, frozen=True):
    items: list[User]


class NewInvite(msgspec.Struct, frozen=True, kw_only=True):
    user: User
    # The one-time link's path, shown once (only its hash is kept).
    invite_path: str
    invite_url: str
    expires_at: datetime


class SessionInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    created_at: datetime
    seen_at: datetime
    expires_at: datetime
    user_agent: str
    verified: bool
    current: bool
