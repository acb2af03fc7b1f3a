"""A person's data: the small tree with quota, the operator's secret set, and keys."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest

from hub.settings import PeopleSettings, Settings
from tenants.scopes import ALL_SCOPES, Scope
from tests.factories import grant, make_key, make_small_tree

SECRET = "people-secret-for-tests"
PHONE = "+8613800138000"  # the person who asks
OTHER = "+8613900139000"  # someone else, in the same rosters and sends


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, people=PeopleSettings(secret=SECRET))


class Keys(msgspec.Struct, frozen=True):
    root: str
    root_reader: str  # the operator's key without tenants:write
    jinjiang: str  # 510104
    qingyang: str  # 510105
    guizhou: str  # 520000


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> Keys:
    await make_small_tree(conn)
    await grant(
        conn,
        {
            "000000": 10_000,
            "510000": 5_000,
            "510100": 3_000,
            "510104": 1_000,
            "510105": 1_000,
            "520000": 1_000,
        },
    )
    return Keys(
        root=await make_key(conn, "000000"),
        root_reader=await make_key(conn, "000000", ALL_SCOPES - {Scope.TENANTS_WRITE}),
        jinjiang=await make_key(conn, "510104"),
        qingyang=await make_key(conn, "510105"),
        guizhou=await make_key(conn, "520000"),
    )
