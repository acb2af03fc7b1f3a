"""The archive's files are a function of the archive alone: every ZIP entry (the XLSX's own
too) carries the fixed date, the XLSX's document properties the fixed date, so the same month
gives the same bytes on any day; and a tenant's words never escape the page's markup."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, date, datetime

from hub.archive import render
from hub.archive.schemas import ArchiveFile, MonthArchive
from hub.messages.schemas import ArchivedReply, ArchivedSend

AT = datetime(2027, 2, 10, 2, 0, tzinfo=UTC)
HOSTILE = '锦江区"}</style><script>alert(1)</script>'


def _archive(name: str = "锦江区") -> MonthArchive:
    notice = ArchivedSend(
        id=7,
        tenant="510104",
        signature="【锦江区】",
        body='=HYPERLINK("http://x") <b>开会</b>',
        priority="normal",
        state="done",
        sender="user:jj.sender",
        approved_by=None,
        approved_at=None,
        created_at=AT,
        due_at=AT,
        cancelled_at=None,
        first_sent_at=AT,
        last_done_at=AT,
        recipients=2,
        statuses={"delivered": 2},
        went_segments=2,
        list_price_micros=120_000,
        reply_wanted=True,
        follows=None,
        follow_kind=None,
        replies=1,
        reply_texts=[ArchivedReply("1", False, AT)],
    )
    return MonthArchive(
        tenant="510104",
        name=name,
        month=date(2027, 2, 1),
        subtree=False,
        final=True,
        closed_at=AT,
        as_of=AT,
        list_price_micros=60_000,
        notices=[notice],
    )


def test_every_entry_of_the_xlsx_and_the_zip_carries_the_fixed_date() -> None:
    sheet = render.xlsx(_archive())
    assert sheet == render.xlsx(_archive())
    with zipfile.ZipFile(io.BytesIO(sheet)) as opened:
        assert {info.date_time for info in opened.infolist()} == {render.FIXED}
        core = opened.read("docProps/core.xml").decode()
    assert "1980-01-01T00:00:00Z" in core
    member = ArchiveFile("archive-510104-2027-02.xlsx", "x", sheet, render.sha256(sheet), True)
    year = render.year_zip("510104", 2027, False, ["2027-02"], [member])
    with zipfile.ZipFile(io.BytesIO(year)) as opened:
        assert {info.date_time for info in opened.infolist()} == {render.FIXED}
        assert opened.namelist() == ["archive-510104-2027-02.xlsx", "manifest.json"]


def test_a_tenants_words_never_escape_the_page() -> None:
    page = render.html(_archive(HOSTILE)).decode()
    assert "<script>" not in page
    assert "</style><script>" not in page
    assert "<b>开会</b>" not in page  # the body is text
    assert "&lt;b&gt;开会&lt;/b&gt;" in page
    # In the running header's CSS string: quotes and angle brackets as escapes.
    assert "锦江区\\22 }\\3c /style\\3e \\3c script\\3e alert(1)\\3c /script\\3e " in page
    assert page == render.html(_archive(HOSTILE)).decode()
