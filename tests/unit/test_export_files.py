"""A download from a temporary file (hub/exports/files.py): nothing of it stays on disk, however
its answer ends."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator

from hub.exports import files
from hub.exports.cells import csv_text, csv_value


async def test_a_download_leaves_no_file_even_if_never_read() -> None:
    data = os.urandom(3 * files.CHUNK_BYTES + 5)
    handle, path = tempfile.mkstemp(prefix="hub-test-")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    answer = files.download(path, "roster.csv", "text/csv", disposition="inline")
    assert not await asyncio.to_thread(os.path.exists, path)  # gone before a byte is sent
    assert answer.headers["Content-Length"] == str(len(data))
    assert answer.headers["Content-Disposition"] == 'inline; filename="roster.csv"'
    assert isinstance(answer.iterator, AsyncIterator)
    chunks = [chunk async for chunk in answer.iterator if isinstance(chunk, bytes)]
    assert len(chunks) == 4
    assert b"".join(chunks) == data


async def test_spooled_chunks_become_one_file() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(3):
            yield bytes([n]) * 10

    path = await files.spooled(chunks(), "hub-test-")
    answer = files.download(path, "x.bin", "application/octet-stream")
    assert isinstance(answer.iterator, AsyncIterator)
    assert b"".join([c async for c in answer.iterator if isinstance(c, bytes)]) == (
        b"\x00" * 10 + b"\x01" * 10 + b"\x02" * 10
    )


def test_a_csv_cell_reads_back_as_the_value_it_was_written_from() -> None:
    values = ["=1+1", "'=1+1", "+8613800138000", "@书记", "'", "''x", "'x", "张三", "", "-", "\tx"]
    assert [csv_text(csv_value(v)) for v in values] == values
    assert [csv_value(v) for v in ("=1", "'=1", "'x", "x")] == ["'=1", "''=1", "''x", "x"]
