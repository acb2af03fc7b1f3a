"""What an archive holds (a month's notices) and what its files are."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

import msgspec

from hub.messages.schemas import ArchivedSend

Kind = Literal["html", "xlsx"]
KINDS: tuple[Kind, ...] = ("html", "xlsx")  # the order a month's files are stored in
MEDIA: dict[str, str] = {
    "html": "text/html",  # Litestar adds "; charset=utf-8"
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "zip": "application/zip",
}
# A file's name in the path: a month's page (`2027-02`, `2027-02.html`), its sheet
# (`2027-02.xlsx`), or a year's ZIP (`2027.zip`). Years of this century, as the ledgers'.
FILE_PATTERN = r"^20[0-9]{2}(-(0[1-9]|1[0-2])(\.(html|xlsx))?|\.zip)(?!\n)$"


class MonthArchive(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's notices of one Beijing month, as of `as_of`."""

    tenant: str  # the code
    name: str  # the tenant's name
    month: date
    subtree: bool  # the notices of the tenant's whole subtree, not only its own
    # Final: the month's billing period is closed, and these are the files stored then.
    final: bool
    closed_at: datetime | None
    as_of: datetime  # the close (final), or the moment it was rendered (not final)
    list_price_micros: int  # per segment: what the cost column is priced at
    notices: list[ArchivedSend]


class ArchiveFile(msgspec.Struct, frozen=True):
    name: str  # archive-<code>[-subtree]-<YYYY-MM>.<kind>, or …-<YYYY>.zip
    media_type: str
    data: bytes
    sha256: str
    final: bool
