"""A month's archive as files: the printable page (HTML with a print stylesheet: A4, a running
header naming the tenant and month, page numbers), the XLSX, and a year's ZIP with a manifest.

Every file is a function of the archive alone, never of the moment it is written: the XLSX's
document properties carry a fixed date, and every ZIP entry (the XLSX is a ZIP too) a fixed
date and the same compression, so the same archive gives the same bytes (and a closed year's
ZIP, built from the stored months, is the same every time). Text cells are inert
(hub/exports/cells.py): a notice beginning with `=` stays text.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from openpyxl import Workbook
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from hub.archive.schemas import ArchiveFile, MonthArchive
from hub.calendar import BEIJING, beijing, shown
from hub.exports.cells import append_row
from hub.messages.reasons import STATUS_WORDS
from hub.messages.schemas import ArchivedSend

# The one date every entry and property carries (ZIP's dates start in 1980).
FIXED = (1980, 1, 1, 0, 0, 0)
FIXED_PROPERTY = datetime(1980, 1, 1)
STATE_WORDS = {
    "scheduled": "定时待发",
    "held": "静默时段待发",
    "queued": "发送中",
    "done": "已完成",
    "cancelled": "已取消",
    "review": "待审核",
    "rejected": "审核未通过",
}
PRIORITY_WORDS = {"urgent": "紧急", "normal": "普通", "bulk": "批量"}
FOLLOW_WORDS = {"remind": "提醒未回复者", "resend": "补发未送达者"}
STATUSES = tuple(STATUS_WORDS)  # the sheet's columns, one per status, in the hub's order

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def _when(instant: datetime | None) -> str:
    return shown(instant) if instant is not None else "—"


def yuan(micros: int) -> Decimal:
    """Micro-yuan as yuan to the fen (half up, as the statement's whole fen)."""
    return (Decimal(micros) / 1_000_000).quantize(Decimal("0.01"))


def _css_string(text: str) -> str:
    """Text inside a CSS string in a <style>: quotes, backslashes, line breaks and `<` escaped
    (a tenant's name never closes the string or the style)."""
    return "".join(c if c.isprintable() and c not in '"\\<>' else f"\\{ord(c):x} " for c in text)


_ENV.filters.update(when=_when, yuan=yuan, css_string=_css_string)


def month_word(archive: MonthArchive) -> str:
    return f"{archive.month.year}年{archive.month.month}月"


def title(archive: MonthArchive) -> str:
    scope = "（含下级）" if archive.subtree else ""
    return f"{archive.name}{scope} {month_word(archive)} 发送档案"


def html(archive: MonthArchive) -> bytes:
    page = _ENV.get_template("page.html").render(
        a=archive,
        title=title(archive),
        month_word=month_word(archive),
        running=f"{archive.name}（{archive.tenant}）· {month_word(archive)} 发送档案",
        status_word="定稿" if archive.final else "未定稿",
        state_words=STATE_WORDS,
        status_words=STATUS_WORDS,
        priority_words=PRIORITY_WORDS,
        follow_words=FOLLOW_WORDS,
    )
    return page.encode()


# --- XLSX -----------------------------------------------------------------------------------

NOTICE_HEADER = (
    "序号",
    "单位代码",
    "发送编号",
    "签名及正文",
    "发送人",
    "审核人",
    f"审核时间({BEIJING})",
    f"创建时间({BEIJING})",
    f"计划发送({BEIJING})",
    f"首条发出({BEIJING})",
    f"全部结束({BEIJING})",
    "状态",
    "优先级",
    "提交号码数",
    *(STATUS_WORDS[s] for s in STATUSES),
    "发出条数",
    "标准价费用(元)",
    "回复数",
)
NOTICE_WIDTHS = (6, 10, 10, 60, 18, 18, *[17] * 5, 10, 8, 10, *[8] * len(STATUSES), 9, 12, 8)
REPLY_HEADER = ("发送编号", f"回复时间({BEIJING})", "回复内容", "退订")
MONEY_COLUMN = NOTICE_HEADER.index("标准价费用(元)")


def _local(instant: datetime | None) -> datetime | str:
    """A date cell on Beijing's clock (Excel's dates carry no zone; the header says whose)."""
    return beijing(instant).replace(tzinfo=None) if instant is not None else ""


def _notice_row(n: int, notice: ArchivedSend) -> tuple[Any, ...]:
    return (
        n,
        notice.tenant,
        notice.id,
        notice.signature + notice.body,
        notice.sender,
        notice.approved_by or "",
        _local(notice.approved_at),
        _local(notice.created_at),
        _local(notice.due_at),
        _local(notice.first_sent_at),
        _local(notice.last_done_at),
        STATE_WORDS.get(notice.state, notice.state),
        PRIORITY_WORDS.get(notice.priority, notice.priority),
        notice.recipients,
        *(notice.statuses.get(s, 0) for s in STATUSES),
        notice.went_segments,
        yuan(notice.list_price_micros),
        notice.replies,
    )


def _sheet(
    book: Workbook, name: str, header: Iterable[str], widths: Iterable[int]
) -> WriteOnlyWorksheet:
    sheet = book.create_sheet(name)
    for n, width in enumerate(widths):
        sheet.column_dimensions[_column(n)].width = width
    sheet.freeze_panes = "A2"
    append_row(sheet, header, bold=True)
    return sheet


def _column(n: int) -> str:
    return (chr(ord("A") + n // 26 - 1) if n >= 26 else "") + chr(ord("A") + n % 26)


def xlsx(archive: MonthArchive) -> bytes:
    """Three sheets: 说明 (whose archive, which month, final or not, how cost is priced), 通知
    (one row per notice, its recipients by status), 回复 (the replies' texts, never phones)."""
    book = Workbook(write_only=True)
    book.properties.creator = "hub"
    book.properties.title = title(archive)
    book.properties.created = book.properties.modified = FIXED_PROPERTY
    about = _sheet(book, "说明", ("项目", "内容"), (16, 80))
    final = (
        f"定稿：账期已于 {shown(archive.closed_at)}（{BEIJING}）结账，本档案不再变化"
        if archive.final and archive.closed_at
        else f"未定稿：本月账期尚未结账，内容仍可能变化（生成于 {shown(archive.as_of)}，{BEIJING}）"
    )
    for row in (
        ("单位", f"{archive.name}（{archive.tenant}）"),
        ("范围", "本单位及其下级单位" if archive.subtree else "本单位"),
        ("月份", f"{archive.month:%Y-%m}（{BEIJING}）"),
        ("状态", final),
        ("通知数", len(archive.notices)),
        ("费用口径", f"标准价：已发往运营商的条数乘以每条 {yuan(archive.list_price_micros)} 元"),
    ):
        append_row(about, row)
    notices = _sheet(book, "通知", NOTICE_HEADER, NOTICE_WIDTHS)
    replies = _sheet(book, "回复", REPLY_HEADER, (10, 17, 60, 6))
    for n, notice in enumerate(archive.notices, start=1):
        append_row(notices, _notice_row(n, notice), {MONEY_COLUMN})
        for r in notice.reply_texts:
            append_row(
                replies, (notice.id, _local(r.received_at), r.text, "是" if r.opt_out else "")
            )
    out = io.BytesIO()
    book.save(out)
    return repack(out.getvalue())


# --- ZIP ------------------------------------------------------------------------------------


def _entry(name: str) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(name, date_time=FIXED)
    entry.compress_type = zipfile.ZIP_DEFLATED
    entry.external_attr = 0o644 << 16
    return entry


def repack(data: bytes) -> bytes:
    """The same ZIP (an XLSX) with every entry's date fixed: openpyxl stamps the wall clock."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            target.writestr(_entry(info.filename), source.read(info))
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ManifestEntry(msgspec.Struct, frozen=True):
    name: str
    size: int
    sha256: str


class Manifest(msgspec.Struct, frozen=True):
    tenant: str
    year: int
    subtree: bool
    months: list[str]  # the closed months in the ZIP; a month still open is not in it
    files: list[ManifestEntry]


def year_zip(
    tenant: str, year: int, subtree: bool, months: list[str], files: list[ArchiveFile]
) -> bytes:
    """The files in name order, then `manifest.json` naming each with its size and SHA-256."""
    ordered = sorted(files, key=lambda f: f.name)
    manifest = Manifest(
        tenant=tenant,
        year=year,
        subtree=subtree,
        months=sorted(months),
        files=[ManifestEntry(f.name, len(f.data), f.sha256) for f in ordered],
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for f in ordered:
            target.writestr(_entry(f.name), f.data)
        target.writestr(_entry("manifest.json"), msgspec.json.format(msgspec.json.encode(manifest)))
    return out.getvalue()
