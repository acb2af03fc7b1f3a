"""The API writes every timestamp one way, and says so in its schema.

The form (hub.calendar.rfc3339): RFC 3339 in Beijing time, always to the microsecond,
`2027-03-16T10:00:00.000000+08:00`. The OpenAPI document states it on every `date-time` an
answer carries; and every GET of the document we can fill in, plus the writes that answer with a
body, is called for real and every time-like string in its answer must have that form.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from hub import calendar
from hub.calendar import TIMESTAMP_PATTERN, period_text
from tests.factories import bearer, grant_ahead, make_key, make_small_tree

FORM = re.compile(TIMESTAMP_PATTERN)
# A string a person would take for a time of day: a date, then hours and minutes.
TIME_LIKE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}")


def _closed() -> str:
    """The month before last: past its grace window whatever the clock reads."""
    last = calendar.current_period() - timedelta(days=1)
    return period_text((last.replace(day=1) - timedelta(days=1)).replace(day=1))


def _later() -> datetime:
    """A known instant given in UTC, tomorrow at 01:00Z (09:00 in Beijing), whatever the clock
    reads: inside the months `grant_ahead` grants."""
    day = (calendar.now() + timedelta(days=1)).astimezone(UTC).date()
    return datetime(day.year, day.month, day.day, 1, tzinfo=UTC)


def _beijing_nine(instant: datetime) -> str:
    return f"{instant:%Y-%m-%d}T09:00:00.000000+08:00"


def time_strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(where, text) for every string in a JSON answer that looks like a time."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from time_strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            yield from time_strings(value, f"{path}[{n}]")
    elif isinstance(node, str) and TIME_LIKE.match(node):
        yield path, node


def schemas_of(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from schemas_of(value, f"{path}/{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            yield from schemas_of(value, f"{path}/{n}")


# The bodies that carry a time the hub reads (`send_at`): any RFC 3339 offset.
READ_BODIES = ("/SendRequest/", "/FollowUpRequest/")


async def test_the_schema_states_the_one_form(client: httpx.AsyncClient) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    assert "2027-03-16T10:00:00.000000+08:00" in document["info"]["description"]
    components = document["components"]["schemas"]
    written = read = 0
    for where, schema in schemas_of(components):
        if schema.get("format") != "date-time":
            continue
        if where.startswith(READ_BODIES):  # a body we read: any offset
            assert "offset" in schema["description"], where
            read += 1
            continue
        assert schema.get("pattern") == TIMESTAMP_PATTERN, where
        assert "+08:00" in schema.get("description", ""), where
        written += 1
    assert written >= 20
    assert read == len(READ_BODIES)
    # No time hides in a plain string: every `…_at` property is a date-time.
    for name, component in components.items():
        for prop, schema in (component.get("properties") or {}).items():
            if prop.endswith("_at") or prop in {"held_until", "due_at"}:
                formats = [s.get("format") for s in [schema, *schema.get("oneOf", [])]]
                assert "date-time" in formats, f"{name}.{prop}"


@pytest.fixture
async def world(conn: asyncpg.Connection, client: httpx.AsyncClient) -> dict[str, Any]:
    """A tree with one of each thing that carries a time, made through the API where it can be."""
    await make_small_tree(conn)
    await grant_ahead(conn, {"000000": 100_000, "510000": 10_000, "510100": 5_000, "510104": 1_000})
    operator, county = await make_key(conn, "000000"), await make_key(conn, "510104")
    answers: dict[str, httpx.Response] = {}

    async def write(name: str, method: str, path: str, key: str, **kwargs: Any) -> Any:
        resp = await client.request(method, path, headers=bearer(key), **kwargs)
        assert resp.status_code < 300, (name, resp.status_code, resp.text)
        answers[name] = resp
        return resp.json() if resp.content else None

    await write(
        "send now",
        "POST",
        "/v1/messages",
        county,
        json={"to": ["13800138000"], "body": "今晚七点开会"},
    )
    # A known instant given in UTC: 01:00Z on the 17th is 09:00 in Beijing.
    later = await write(
        "send later",
        "POST",
        "/v1/messages",
        county,
        json={
            "to": ["13900139000"],
            "body": "明天九点开会",
            "send_at": f"{_later():%Y-%m-%dT%H:%M:%SZ}",
        },
    )
    template = await write(
        "template", "POST", "/v1/templates", county, json={"name": "通知", "body": "{name}同志好"}
    )
    csv = "姓名,手机,标签\n张三,13800138000,书记\n".encode()
    await write("import", "POST", "/v1/contacts/import", county, content=csv)
    await write(
        "signature", "PUT", "/v1/tenants/510104/signature", county, json={"signature": "锦江"}
    )
    await write(
        "webhook",
        "PUT",
        "/v1/tenants/510104/webhook",
        county,
        json={"url": "https://hooks.example.org/sms", "secret": "s" * 32},
    )
    await write(
        "rate limits", "PUT", "/v1/tenants/510104/rate-limits", operator, json={"key_burst": 50}
    )
    await write("close", "POST", f"/v1/billing/{_closed()}/close", operator)
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    await conn.execute(
        "INSERT INTO inbound (tenant_id, gateway, reference, phone, address, text, opt_out)"
        " VALUES ($1, 'outbox', 'r1', '+8613800138000', '10690000000001', '收到', false)",
        tenant_id,
    )
    return {
        "operator": operator,
        "county": county,
        "answers": answers,
        "ids": {
            "send_id": later["id"],  # scheduled: it has a send_at
            "template_id": template["id"],
            "code": "510104",
        },
    }


async def test_a_known_instant_is_written_in_beijing_time(
    client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    later = world["answers"]["send later"].json()
    assert later["due_at"] == _beijing_nine(_later())
    view = (await client.get(f"/v1/messages/{later['id']}", headers=bearer(world["county"]))).json()
    assert view["send_at"] == view["due_at"] == _beijing_nine(_later())
    # Read back, it is the very instant the client asked for.
    assert datetime.fromisoformat(view["send_at"]) == _later()


async def test_every_answer_writes_timestamps_in_the_one_form(
    client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    period = period_text(calendar.current_period())
    fill = {**world["ids"], "period": period}
    answers: dict[str, Any] = {
        name: resp.json() for name, resp in world["answers"].items() if resp.content
    }
    for path, item in document["paths"].items():
        if "get" not in item or not path.startswith("/v1/") or "/gateways/" in path:
            continue
        if path.endswith((".csv", ".xlsx")):
            continue
        url = path.replace("{period}", _closed()) if "/billing/" in path else path
        try:
            url = url.format(**fill)
        except KeyError:
            continue  # a parameter this test has nothing for (a key prefix, a campaign)
        # The whole subtree, this month, where a route takes those.
        query = {p["name"] for p in item["get"].get("parameters", []) if p["in"] == "query"}
        params = {k: v for k, v in (("subtree", "true"), ("period", period)) if k in query}
        resp = await client.get(url, params=params, headers=bearer(world["operator"]))
        assert resp.status_code == 200, (url, resp.text)
        if resp.headers["content-type"].startswith("application/json"):
            answers[url] = resp.json()
    seen: dict[str, set[str]] = {}
    for name, answer in answers.items():
        for where, text in time_strings(answer):
            assert FORM.match(text), f"{name}{where} = {text!r}"
            seen.setdefault(where.rsplit(".", 1)[-1], set()).add(name)
    # The times the main routes carry were all there to check.
    expected = {"created_at", "updated_at", "due_at", "send_at", "received_at", "closed_at"}
    assert expected <= seen.keys(), seen.keys()
    assert sum(len(names) for names in seen.values()) >= 15


async def test_an_idempotent_replay_is_the_first_answer_byte_for_byte(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_small_tree(conn)
    await grant_ahead(conn, {"000000": 1_000, "510000": 1_000, "510100": 1_000, "510104": 100})
    county = await make_key(conn, "510104")
    headers = {**bearer(county), "Idempotency-Key": "times-1"}
    body = {
        "to": ["13800138000"],
        "body": "今晚七点开会",
        "send_at": f"{_later():%Y-%m-%dT%H:%M:%SZ}",
    }
    first = await client.post("/v1/messages", json=body, headers=headers)
    again = await client.post("/v1/messages", json=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert msgspec.json.decode(again.content)["due_at"] == _beijing_nine(_later())
