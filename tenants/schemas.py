"""API shapes for tenants, keys and the caller's identity."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from tenants.scopes import Scope

TenantCode = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9]{6,12}$",
        description="GB/T 2260 code (6 digits) or a caller-chosen code of 6 to 12 digits",
        examples=["510104"],
    ),
]
# Printable text: no control characters, no leading or trailing space. Written with explicit
# ranges, not \s, because JSON Schema (ECMA) and Python disagree on what \s matches.
TenantName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00-\x20\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f])?$",
    ),
]
# The signature's text without the 【】 brackets, which the hub adds.
SignatureText = Annotated[
    str,
    msgspec.Meta(
        min_length=2,
        max_length=30,
        pattern=r"^[^【】\x00-\x20\x7f-\x9f][^【】\x00-\x1f\x7f-\x9f]*[^【】\x00-\x20\x7f-\x9f]$",
    ),
]
KeyName = Annotated[str, msgspec.Meta(max_length=100)]


class Tenant(msgspec.Struct, frozen=True):
    code: str
    name: str
    level: str
    parent_code: str | None
    depth: int
    status: str
    # As it prefixes every message, brackets included: "【锦江区委组织部】".
    signature: str
    # Replies to <service number><sms_extension> reach this tenant.
    sms_extension: str
    created_at: datetime


class TenantPage(msgspec.Struct, frozen=True):
    items: list[Tenant]
    # Pass as `after` for the next page; null on the last page.
    next_after: str | None


class TenantNode(msgspec.Struct, frozen=True):
    code: str
    name: str
    level: str
    status: str
    children: list[TenantNode]
    # True when the node has children below the requested depth that are not listed.
    truncated: bool = False


class CreateChild(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    code: TenantCode
    name: TenantName
    # Defaults to the name.
    signature: SignatureText | None = None


class UpdateTenant(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    name: TenantName | None = None
    signature: SignatureText | None = None
    # Only an ancestor may suspend or reactivate a tenant; a suspended tenant's keys stop working.
    status: Literal["active", "suspended"] | None = None


class CreateKey(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=len(Scope))]
    name: KeyName = ""


class ApiKeyInfo(msgspec.Struct, frozen=True):
    prefix: str
    tenant_code: str
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewApiKey(msgspec.Struct, frozen=True):
    # The whole key, `hub_<prefix>_<secret>`. Shown this once; only its hash is kept.
    key: str
    info: ApiKeyInfo


class ApiKeyList(msgspec.Struct, frozen=True):
    items: list[ApiKeyInfo]


class Me(msgspec.Struct, frozen=True):
    tenant: Tenant
    key_prefix: str
    scopes: list[str]
