"""Downloads served from a temporary file, built whole before the first byte goes.

An export reads on a connection of the pool every tenant shares. Streamed as its rows were read,
a client that stopped reading kept that connection (and its open transaction) for as long as it
liked: twenty stalled roster downloads took the whole pool and every other tenant's request
waited. Written to a file first, the connection is back in the pool before the client reads a
byte. The file is opened and unlinked before the answer starts (`download`): a stalled client
holds an open file, and nothing is left on disk however the answer ends (a client gone, a task
cancelled at shutdown).

Building one costs CPU (an XLSX of a 20,000-person roster: seconds), so a tenant builds at most
EXPORTS_PER_TENANT at once in each API process (`building`); past that, 429. (Ten at once took
every other tenant's answers from milliseconds to seconds.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from typing import BinaryIO, Literal

from litestar.response import Stream
from openpyxl import Workbook

from hub.errors import TooManyRequests

EXPORTS_PER_TENANT = 2
CHUNK_BYTES = 1 << 20  # read from the page cache a mebibyte at a time
_building: Counter[int] = Counter()  # downloads being built in this process, by tenant


@contextlib.asynccontextmanager
async def building(tenant_id: int) -> AsyncIterator[None]:
    """One of the tenant's EXPORTS_PER_TENANT downloads being built, else TooManyRequests."""
    if _building[tenant_id] >= EXPORTS_PER_TENANT:
        raise TooManyRequests(
            f"{EXPORTS_PER_TENANT} downloads of this unit are being prepared: "
            "try again when one is done"
        )
    _building[tenant_id] += 1
    try:
        yield
    finally:
        _building[tenant_id] -= 1
        if not _building[tenant_id]:
            del _building[tenant_id]


def download(
    path: str,
    filename: str,
    media_type: str,
    *,
    disposition: Literal["attachment", "inline"] = "attachment",
) -> Stream:
    """The file at `path` (an ASCII `filename`) as the answer; its name is gone from the disk
    before this returns, its bytes when the answer's reading of them ends."""
    handle = open(path, "rb")  # closed by _read, or with it
    try:
        os.unlink(path)
        size = os.fstat(handle.fileno()).st_size
    except BaseException:
        handle.close()
        raise
    headers = {
        "Content-Disposition": f'{disposition}; filename="{filename}"',
        "Content-Length": str(size),
    }
    return Stream(_read(handle), media_type=media_type, headers=headers)


async def _read(handle: BinaryIO) -> AsyncIterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


async def saved(book: Workbook, prefix: str) -> str:
    """An openpyxl workbook saved (in a thread: seconds for a big one) to a new temporary .xlsx
    file; its path (the caller serves and deletes it)."""
    handle, path = tempfile.mkstemp(prefix=prefix, suffix=".xlsx")
    os.close(handle)
    try:
        await asyncio.to_thread(book.save, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


async def spooled(chunks: AsyncIterable[bytes], prefix: str) -> str:
    """`chunks` written to a new temporary file; its path (the caller serves and deletes it)."""
    handle, path = tempfile.mkstemp(prefix=prefix)
    try:
        with os.fdopen(handle, "wb") as out:
            async for chunk in chunks:
                out.write(chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path
