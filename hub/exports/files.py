"""Downloads served from a temporary file, built whole before the first byte goes.

An export reads on a connection of the pool every tenant shares. Streamed as its rows were read,
a client that stopped reading kept that connection (and its open transaction) for as long as it
liked: twenty stalled roster downloads took the whole pool and every other tenant's request
waited. Written to a file first, the connection is back in the pool before the client reads a
byte. The file is opened and unlinked before the answer starts (`download`): a stalled client
holds an open file, and nothing is left on disk however the answer ends (a client gone, a task
cancelled at shutdown).

Building one costs CPU (an XLSX of a 20,000-person roster: seconds), and sending it holds its
file, so a tenant has at most EXPORTS_PER_TENANT downloads at once in each API process, from the
building to the end of the answer (`building`, handed to `download`); past that, 429. (Ten at
once took every other tenant's answers from milliseconds to seconds; sixty stalled 18 MB roster
downloads held 1 GB of disk while the slot covered only the building.) A tenant's stalled
downloads so hold back only its own next ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from typing import BinaryIO, Literal

from litestar.response import Stream
from openpyxl import Workbook

from hub.errors import TooManyRequests

EXPORTS_PER_TENANT = 2
CHUNK_BYTES = 1 << 20  # read from the page cache a mebibyte at a time
_held: Counter[int] = Counter()  # downloads being built or sent by this process, by tenant
_counting = threading.Lock()
CSV = "text/csv"  # Litestar adds "; charset=utf-8" to a text/* type


class Slot:
    """One of a tenant's EXPORTS_PER_TENANT downloads, held from its building to the end of its
    answer (or the end of `building`, if no answer was made)."""

    def __init__(self, tenant_id: int) -> None:
        with _counting:
            if _held[tenant_id] >= EXPORTS_PER_TENANT:
                raise TooManyRequests(
                    f"{EXPORTS_PER_TENANT} downloads of this unit are being prepared or sent: "
                    "try again when one is done"
                )
            _held[tenant_id] += 1
        self.tenant_id, self.held, self.handed = tenant_id, True, False

    def release(self) -> None:
        with _counting:  # also from __del__, which may run in any thread
            if self.held:
                self.held = False
                _held[self.tenant_id] -= 1
                if not _held[self.tenant_id]:
                    del _held[self.tenant_id]


@contextlib.asynccontextmanager
async def building(tenant_id: int) -> AsyncIterator[Slot]:
    """One of the tenant's EXPORTS_PER_TENANT slots (else TooManyRequests), for `download` to
    keep until its answer ends; let go here if no download took it."""
    slot = Slot(tenant_id)
    try:
        yield slot
    finally:
        if not slot.handed:
            slot.release()


def download(
    path: str,
    filename: str,
    media_type: str,
    slot: Slot,
    *,
    disposition: Literal["attachment", "inline"] = "attachment",
) -> Stream:
    """The file at `path` (an ASCII `filename`) as the answer; its name is gone from the disk
    before this returns, its bytes and `slot` when the answer's reading of them ends (or the
    answer is dropped unread)."""
    handle = open(path, "rb")  # closed by _Sending
    try:
        os.unlink(path)
        size = os.fstat(handle.fileno()).st_size
    except BaseException:
        handle.close()
        raise
    slot.handed = True
    headers = {
        "Content-Disposition": f'{disposition}; filename="{filename}"',
        "Content-Length": str(size),
        # nginx would read the whole file into a buffer of its own on disk (up to 1 GB) for a
        # client that stalls: the stall stays here, where the unit's slot counts it.
        "X-Accel-Buffering": "no",
    }
    return Stream(_read(_Sending(handle, slot)), media_type=media_type, headers=headers)


class _Sending:
    """A download's open file and its slot, let go together when its answer ends, or when the
    answer is dropped unread (a client gone before it started)."""

    def __init__(self, handle: BinaryIO, slot: Slot) -> None:
        self.handle, self.slot = handle, slot

    def close(self) -> None:
        try:
            self.slot.release()
        finally:
            self.handle.close()

    __del__ = close


async def _read(sending: _Sending) -> AsyncIterator[bytes]:
    try:
        while chunk := sending.handle.read(CHUNK_BYTES):
            yield chunk
    finally:
        sending.close()


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
