"""A download from a temporary file (hub/exports/files.py): nothing of it stays on disk, however
its answer ends, and a tenant's slot is held until it does."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from hub.errors import TooManyRequests
from hub.exports import files
from hub.exports.cells import csv_text, csv_value

TENANT = 4_242  # no tenant row is needed: slots are counted in the process


@pytest.fixture(autouse=True)
def _no_slot_left() -> Iterator[None]:
    """A test that fails midway leaves no slot held for the next one."""
    yield
    for tenant in (TENANT, TENANT + 1):
        files._held.pop(tenant, None)


async def test_a_download_leaves_no_file_even_if_never_read() -> None:
    data = os.urandom(3 * files.CHUNK_BYTES + 5)
    handle, path = tempfile.mkstemp(prefix="hub-test-")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    async with files.building(TENANT) as slot:
        answer = files.download(path, "roster.csv", "text/csv", slot, disposition="inline")
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

    async with files.building(TENANT) as slot:
        path = await files.spooled(chunks(), "hub-test-")
        answer = files.download(path, "x.bin", "application/octet-stream", slot)
    assert isinstance(answer.iterator, AsyncIterator)
    assert b"".join([c async for c in answer.iterator if isinstance(c, bytes)]) == (
        b"\x00" * 10 + b"\x01" * 10 + b"\x02" * 10
    )


async def _answer(prefix: str) -> AsyncIterator[bytes | str]:
    """A download of a small file, made under one of TENANT's slots: its body."""
    async with files.building(TENANT) as slot:
        path = await files.spooled(_one_chunk(), prefix)
        answer = files.download(path, "x.bin", "application/octet-stream", slot)
    assert isinstance(answer.iterator, AsyncIterator)
    return answer.iterator


async def _one_chunk() -> AsyncIterator[bytes]:
    yield b"x" * 100


async def test_a_tenants_slot_is_held_until_its_answer_ends() -> None:
    """A stalled download keeps its slot (and its file) until its answer ends, read to the end,
    broken off, or dropped unread: a tenant's third at once is 429, another tenant's is not."""
    read_whole, stalled = await _answer("hub-a-"), await _answer("hub-b-")
    with pytest.raises(TooManyRequests):
        async with files.building(TENANT):
            pass
    async with files.building(TENANT + 1):  # another tenant is not held by them
        pass
    assert [c async for c in read_whole] == [b"x" * 100]
    third = await _answer("hub-c-")  # read_whole's slot is free again; stalled still holds one
    with pytest.raises(TooManyRequests):
        async with files.building(TENANT):
            pass
    assert await anext(stalled) == b"x" * 100  # a client that read some, then went away
    await stalled.aclose()  # type: ignore[attr-defined]
    del third  # an answer never started: its slot goes with it (no cycle: at once)
    for _ in range(files.EXPORTS_PER_TENANT):
        async with files.building(TENANT):
            pass
    assert TENANT not in files._held


async def test_a_slot_taken_by_no_download_is_let_go() -> None:
    with pytest.raises(FileNotFoundError):
        async with files.building(TENANT) as slot:
            files.download("/nonexistent/x.csv", "x.csv", "text/csv", slot)
    async with files.building(TENANT), files.building(TENANT):
        pass
    assert TENANT not in files._held


def test_a_csv_cell_reads_back_as_the_value_it_was_written_from() -> None:
    values = ["=1+1", "'=1+1", "+8613800138000", "@书记", "'", "''x", "'x", "张三", "", "-", "\tx"]
    assert [csv_text(csv_value(v)) for v in values] == values
    assert [csv_value(v) for v in ("=1", "'=1", "'x", "x")] == ["'=1", "''=1", "''x", "x"]
