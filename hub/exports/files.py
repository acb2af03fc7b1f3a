"""Downloads served from a temporary file, built whole before the first byte goes.

An export reads on a connection of the pool every tenant shares. Streamed as its rows were read,
a client that stopped reading kept that connection (and its open transaction) for as long as it
liked: twenty stalled roster downloads took the whole pool and every other tenant's request
waited. Written to a file first, the connection is back in the pool before the client reads a
byte; a stalled client holds a file, deleted when its answer ends.

Building one costs CPU (an XLSX of a 20,000-person roster: seconds), so a tenant builds at most
EXPORTS_PER_TENANT at once in each API process (`building`); past that, 429. (Ten at once took
every other tenant's answers from milliseconds to seconds.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from typing import Literal

from litestar.background_tasks import BackgroundTask
from litestar.response import File

from hub.errors import TooManyRequests

EXPORTS_PER_TENANT = 2
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
) -> File:
    """The file at `path` as the answer, deleted once it has been sent."""
    return File(
        path,
        filename=filename,
        media_type=media_type,
        content_disposition_type=disposition,
        background=BackgroundTask(os.unlink, path),
    )


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
