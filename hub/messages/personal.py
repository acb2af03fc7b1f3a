"""Per-recipient text: placeholders left in a send's body ({姓名}, or a roster's free field such
as {职务}) filled in from each recipient's roster entry.

A body (or a template's, once the send's `vars` are in) that still holds placeholders is
personal: each recipient gets its own text, its segments counted on their own. Its values are
the send's own `values` for the phone (a roster file's columns, say) over what the caller's
roster says of it. A recipient without a value is rejected on its own (`missing_value`), as is
one whose text comes out too long (`too_long`). A placeholder that no recipient can fill is a
mistake in the send, not a gap in the roster: 422, naming it.
"""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec

from hub.contacts import service as contacts
from hub.errors import Invalid
from hub.messages.numbers import Recipient, Rejected, normalize
from hub.messages.segments import MAX_CHARACTERS, count_segments, signed
from hub.templates.service import fill, variables
from tenants.repository import TenantRow

YIELD_EVERY = 1_000


class Personal(msgspec.Struct, frozen=True):
    """Each recipient's own body (without the signature) and its segments."""

    bodies: dict[str, str]
    segments: dict[str, int]
    encoding: str  # "ucs2" if any text needs it


def _unfillable(names: list[str], template: bool) -> Invalid:
    if template:
        return Invalid(
            f"missing template variables: {', '.join(names)}",
            fields=[{"key": f"vars.{n}", "message": "missing", "source": "body"} for n in names],
        )
    shown = ", ".join(f"{{{n}}}" for n in names)
    return Invalid(
        f"no recipient's roster entry has a value for {shown}",
        fields=[{"key": "body", "message": f"{shown}: not in the roster", "source": "body"}],
    )


async def personalise(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    signature: str,
    body: str,
    recipients: list[Recipient],
    subtree: bool,
    template: bool,
    given: dict[str, dict[str, str]],
) -> tuple[list[Recipient], list[Rejected], Personal | None]:
    """The recipients that can have their own text, those that cannot (rejected one by one) and
    the texts; None when the body has no placeholder left (one text for everyone)."""
    names = variables(body)
    if not names:
        return recipients, [], None
    roster = await contacts.roster_values(conn, tenant, [r.phone for r in recipients], subtree)
    for raw, values in given.items():
        recipient = normalize(raw)
        if isinstance(recipient, Recipient):
            roster[recipient.phone] = roster.get(recipient.phone, {}) | values
    unfilled = set(names)  # the placeholders no recipient has a value for
    kept: list[Recipient] = []
    rejected: list[Rejected] = []
    bodies: dict[str, str] = {}
    segments: dict[str, int] = {}
    encodings: set[str] = set()
    for n, recipient in enumerate(recipients, 1):
        entry = {k: v for k, v in roster.get(recipient.phone, {}).items() if v}
        unfilled -= entry.keys()
        own = fill(body, entry)
        text = signed(signature, own)
        if any(name not in entry for name in names):
            rejected.append(Rejected(to=recipient.phone, reason="missing_value"))
        elif len(text) > MAX_CHARACTERS:
            rejected.append(Rejected(to=recipient.phone, reason="too_long"))
        else:
            counted = count_segments(text)
            kept.append(recipient)
            bodies[recipient.phone] = own
            segments[recipient.phone] = counted.count
            encodings.add(counted.encoding)
        if n % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # a large send's texts must not stall other requests
    if recipients and unfilled:
        raise _unfillable([n for n in names if n in unfilled], template)
    encoding = "ucs2" if "ucs2" in encodings else "gsm7"
    return kept, rejected, Personal(bodies=bodies, segments=segments, encoding=encoding)
