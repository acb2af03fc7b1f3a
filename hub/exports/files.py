"""Downloads served from a temporary file, built whole before the first byte goes.

An export reads on a connection of the pool every tenant shares. Streamed as its rows were read,
a client that stopped reading kept that connection (and its open transaction) for as long as it
liked: twenty stalled roster downloads took the whole pool and every other tenant's request
waited. Written to a file first, the connection is back in the pool before the client reads a
byte; a stalled client holds a file, deleted when its answer ends.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterable
from typing import Literal

from litestar.background_tasks import BackgroundTask
from litestar.response import File


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
