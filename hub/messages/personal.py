"""Per-recipient text: placeholders left in a send's body ({姓名}, or a roster's free field such
as {职务}) filled in from each recipient's roster entry.

A body (or a template's, once the send's `vars` are in) that still holds placeholders is
personal: each recipient gets its own text, its segments counted on their own. Its values are
the send's own `values` for the phone (a roster file's columns, say) over what the caller's
roster says of it. A recipient without a value is rejected on its own (`missing_value`), as is
one whose text comes out too long (`too_long`). A placeholder that no recipient can fill is a
mistake in the send, not a gap in the roster: 422, naming it. A value holding 【】 or a
control character is refused for its recipient (`unfit_value`): it would forge a signature.

A follow-up of a personal send (a reminder, a resend) sends each phone the text its first
message had (`own_texts`), not the roster's values of today.
"""

from __future__ import annotations

import asyncio
import re

import asyncpg
import msgspec

from hub.contacts import service as contacts
from hub.errors import Invalid
from hub.messages.numbers import Reason, Recipient, Rejected, normalize
from hub.messages.segments import MAX_CHARACTERS, count_segments, signed
from hub.templates.schemas import NOT_IN_BODY
from hub.templates.service import fill, variables
from tenants.repository import TenantRow

YIELD_EVERY = 1_000
# What a value may not bring into a text, as a body may not hold it: 【】 (a second, forged
# signature) and control characters (hub.templates.schemas.NOT_IN_BODY). A roster's names and
# fields allow them; the recipient whose value has one is rejected on its own.
_UNFIT = re.compile(f"[{NOT_IN_BODY}]")


class Personal(msgspec.Struct, frozen=True):
    """Each recipient's own body (without the signature) and its segments."""

    bodies: dict[str, str]
    segments: dict[str, int]
    encoding: str  # "ucs2" if any text is, or (nobody to send to) the unfilled body is


class _Texts:
    """Recipients' own texts as they are decided, one at a time."""

    def __init__(self, signature: str) -> None:
        self.signature = signature
        self.kept: list[Recipient] = []
        self.rejected: list[Rejected] = []
        self.bodies: dict[str, str] = {}
        self.segments: dict[str, int] = {}
        self.encodings: set[str] = set()

    def add(self, recipient: Recipient, own: str) -> None:
        """`own` for `recipient`, unless the text is too long with its signature."""
        text = signed(self.signature, own)
        if len(text) > MAX_CHARACTERS:
            self.refuse(recipient, "too_long")
            return
        counted = count_segments(text)
        self.kept.append(recipient)
        self.bodies[recipient.phone] = own
        self.segments[recipient.phone] = counted.count
        self.encodings.add(counted.encoding)

    def refuse(self, recipient: Recipient, reason: Reason) -> None:
        self.rejected.append(Rejected(to=recipient.phone, reason=reason))

    def result(self, body: str) -> tuple[list[Recipient], list[Rejected], Personal]:
        encodings = self.encodings or {count_segments(signed(self.signature, body)).encoding}
        encoding = "ucs2" if "ucs2" in encodings else "gsm7"
        personal = Personal(bodies=self.bodies, segments=self.segments, encoding=encoding)
        return self.kept, self.rejected, personal


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


async def _values(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    recipients: list[Recipient],
    subtree: bool,
    given: dict[str, dict[str, str]],
) -> dict[str, dict[str, str]]:
    """Per phone, its values: the send's own (`given`, by phone as written) over the roster's;
    an empty value is no value."""
    values = await contacts.roster_values(conn, tenant, [r.phone for r in recipients], subtree)
    for raw, own in given.items():
        recipient = normalize(raw)
        if isinstance(recipient, Recipient):
            values[recipient.phone] = values.get(recipient.phone, {}) | {
                k: v for k, v in own.items() if v
            }
    return {phone: {k: v for k, v in entry.items() if v} for phone, entry in values.items()}


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
    values = await _values(conn, tenant, recipients, subtree, given)
    unfilled = set(names)  # the placeholders no recipient has a value for
    texts = _Texts(signature)
    for n, recipient in enumerate(recipients, 1):
        entry = values.get(recipient.phone, {})
        unfilled -= entry.keys()
        if any(name not in entry for name in names):
            texts.refuse(recipient, "missing_value")
        elif any(_UNFIT.search(entry[name]) for name in names):
            texts.refuse(recipient, "unfit_value")
        else:
            texts.add(recipient, fill(body, entry))
        if n % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # a large send's texts must not stall other requests
    if recipients and unfilled:
        raise _unfillable([n for n in names if n in unfilled], template)
    return texts.result(body)


def own_texts(
    signature: str, body: str, recipients: list[Recipient], bodies: dict[str, str]
) -> tuple[list[Recipient], list[Rejected], Personal]:
    """Each recipient's body given whole (a follow-up's: the text its first message had); a
    recipient without one is rejected on its own."""
    texts = _Texts(signature)
    for recipient in recipients:
        own = bodies.get(recipient.phone)
        if own is None:
            texts.refuse(recipient, "missing_value")
        else:
            texts.add(recipient, own)
    return texts.result(body)
