"""Every integer the API takes has bounds PostgreSQL's bigint can hold, so `after=2^64` or an id
of twenty digits is a 422 and never reaches asyncpg (whose int8 overflow was a 500)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from hub.app import create_app
from hub.settings import Settings

INT8 = (-(2**63), 2**63 - 1)
# Integers the service takes unbounded on purpose, each rejected on its own: a phone written as a
# number, and a contact id that is no contact ("a bad recipient rejects that recipient").
ONE_BY_ONE = {"SendRequest.to", "SendRequest.to_contacts"}


def _document() -> dict[str, Any]:
    return msgspec.to_builtins(create_app(Settings()).openapi_schema.to_schema())  # type: ignore[no-any-return]


def _integers(schema: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every integer schema inside `schema` (properties, items, unions), with where it is.

    Bounds may sit beside a union (`{"oneOf": [integer, null], "maximum": …}`): they hold for
    its integer branch too. `allOf` holds only rules across fields (hub.openapi), which restate
    a field's type and not its bounds: the field itself is checked."""
    if schema.get("type") == "integer":
        yield where, schema
    bounds: dict[str, Any] = {k: schema[k] for k in ("minimum", "maximum") if k in schema}
    for key in ("oneOf", "anyOf"):
        for option in schema.get(key, []):
            yield from _integers({**bounds, **option}, where)
    if "items" in schema:
        yield from _integers(schema["items"], where)
    for name, prop in schema.get("properties", {}).items():
        yield from _integers(prop, f"{where}.{name}")


def _unbounded(schema: dict[str, Any]) -> bool:
    low, high = schema.get("minimum"), schema.get("maximum")
    return low is None or high is None or low < INT8[0] or high > INT8[1]


def test_every_integer_parameter_is_bounded() -> None:
    document = _document()
    unbounded = [
        f"{method.upper()} {path} {param['name']}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for param in operation.get("parameters", [])
        for _, schema in _integers(param["schema"], param["name"])
        if _unbounded(schema)
    ]
    assert unbounded == []


def test_every_integer_body_field_is_bounded_or_judged_one_by_one() -> None:
    schemas = _document()["components"]["schemas"]
    unbounded = {
        where
        for name, schema in schemas.items()
        if not name.startswith(("Schema", "litestar"))
        for where, found in _integers(schema, name)
        if _unbounded(found)
    }
    # Answers (SendView, Quota…) are ours to write; only bodies a client sends matter here.
    closed = {
        name for name, schema in schemas.items() if schema.get("additionalProperties") is False
    }
    inputs = {where for where in unbounded if where.split(".")[0] in closed}
    assert inputs == ONE_BY_ONE
