"""API shapes for tenants, keys and the caller's identity."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from tenants.scopes import Scope

# A unit's code: its parent's code followed by three digits (see service.check_unit_code), so
# never a 6-digit code GB/T 2260 could assign and never one of another region's space.
UnitCode = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9]{9,12}(?!\n)$",
        description="The parent's code followed by three digits of the caller's choosing "
        "(under 510104: 510104001 to 510104999); 12 digits at most",
        examples=["510104001"],
    ),
]
# The control characters no text may hold, as a character class's ranges (for patterns and
# hub.inputs alike): C0 but tab, line feed and carriage return; DEL; C1. PostgreSQL text cannot
# hold NUL, and no phone shows the rest.
CONTROL_CHARS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
# ... and what a one-line text (a name, a tag) may not hold: every C0 character too.
LINE_CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f"
# One line of text, not empty. `(?!\n)$`: Python's `$` also matches before a final line break.
LINE_PATTERN = rf"^[^{LINE_CONTROL_CHARS}]+(?!\n)$"
# Printable text: no control characters, no leading or trailing space. Written with explicit
# ranges, not \s, because JSON Schema (ECMA) and Python disagree on what \s matches.
TenantName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=100,
        pattern=(
            rf"^[^\x20{LINE_CONTROL_CHARS}]"
            rf"([^{LINE_CONTROL_CHARS}]*[^\x20{LINE_CONTROL_CHARS}])?(?!\n)$"
        ),
    ),
]
# Characters a phone does not show as themselves: control characters (C0, DEL, C1) and the
# invisible or direction-changing format characters (soft hyphen, zero-width, bidi overrides,
# BOM) that would let a signature look like another one.
_UNSHOWN = LINE_CONTROL_CHARS + r"\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
# The signature's text without the 【】 brackets, which the hub adds: 2 to 30 characters, no
# brackets (a text must not close its signature and open another), nothing unshown, no space at
# either end. `(?!\n)$`: Python's `$` also matches before a final line break; this one does not.
SignatureText = Annotated[
    str,
    msgspec.Meta(
        min_length=2,
        max_length=30,
        pattern=rf"^[^【】\x20{_UNSHOWN}][^【】{_UNSHOWN}]*[^【】\x20{_UNSHOWN}](?!\n)$",
        examples=["锦江区委组织部"],
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
    # The approved signature, as it prefixes every message, brackets included:
    # "【锦江区委组织部】". Null until a tenant above approves one; a signature given here (or at
    # creation) is a proposal, shown with its review at GET /v1/tenants/{code}/signature.
    signature: str | None
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
    code: UnitCode
    name: TenantName
    # Defaults to the name. Either way a proposal, approved by a tenant above the caller (at once
    # when the caller is the operator).
    signature: SignatureText | None = None


class UpdateTenant(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    name: TenantName | None = None
    # Proposes a new signature (PUT /v1/tenants/{code}/signature does the same); the approved one
    # stays in use until a tenant above the caller approves it.
    signature: SignatureText | None = None
    # Only an ancestor may suspend or reactivate a tenant. Suspension covers the subtree: its
    # keys may read but not write (403 `suspended`), and its sends wait until it is active.
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
