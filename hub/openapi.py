"""The OpenAPI document: its configuration, and what Litestar leaves out of it that our bodies
enforce (so that a client trusting the schema, schemathesis included, is not surprised)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Router
from litestar.enums import MediaType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.static_files import create_static_files_router

from hub.calendar import TIMESTAMP_FORM, TIMESTAMP_PATTERN

OWN_PACKAGES = ("hub", "tenants")
# What a timestamp a client sends may look like (msgspec parses any RFC 3339 offset).
TIMESTAMP_INPUT = "RFC 3339 with an offset (Z, +08:00, …); stored as the instant it names"


# The documentation pages' scripts and styles, served by the hub itself (no CDN: the hub runs
# where the internet may not be reachable): Swagger UI 5 (it reads OpenAPI 3.1; Apache-2.0) and
# ReDoc 2 (MIT) from npm's swagger-ui-dist and redoc, kept in hub/docs_assets with their
# licences.
DOCS_ASSETS = "/docs/assets"
ASSETS_DIR = Path(__file__).resolve().parent / "docs_assets"
_FAVICON = f"<link rel='icon' type='image/png' href='{DOCS_ASSETS}/favicon-32x32.png'>"


def docs_assets() -> Router:
    """The documentation pages' own files (public, like the pages)."""
    return create_static_files_router(
        path=DOCS_ASSETS, directories=[ASSETS_DIR], include_in_schema=False
    )


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="hub",
        version=version,
        description=(
            "One shared SMS service for a province's organization departments.\n\n"
            f"**Times.** Every timestamp the API writes is {TIMESTAMP_FORM}. A timestamp sent "
            "to it (`send_at`) may be RFC 3339 with any offset. Days and months (`period`, "
            "`day`) are Beijing's calendar: YYYY-MM-DD, YYYY-MM."
        ),
        path="/schema",
        render_plugins=[
            RedocRenderPlugin(
                path="/",
                js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                google_fonts=False,
                favicon=_FAVICON,
            ),
            SwaggerRenderPlugin(
                path="/swagger",
                js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
                favicon=_FAVICON,
            ),
        ],
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="hub_<prefix>_<secret>",
                    description="An API key from `hub keys create` or POST /v1/tenants/{code}/keys",
                )
            }
        ),
        security=[{"apiKey": []}],
    )


def _structs(base: type[msgspec.Struct]) -> Iterator[type[msgspec.Struct]]:
    for sub in base.__subclasses__():
        yield sub
        yield from _structs(sub)


def _own_structs(schemas: dict[str, Any]) -> Iterator[type[msgspec.Struct]]:
    """Our bodies and answers that the document holds a component for."""
    for struct in _structs(msgspec.Struct):
        own = getattr(struct, "__module__", "").split(".")[0] in OWN_PACKAGES
        if own and struct.__name__ in schemas:
            yield struct


def _int_minimums(struct: type[msgspec.Struct]) -> Iterator[tuple[str, int]]:
    """(field, minimum) for every int field with a lower bound, unions with None included."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        types = (
            field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,)
        )
        for kind in types:
            if isinstance(kind, msgspec.inspect.Metadata):
                kind = kind.type
            if isinstance(kind, msgspec.inspect.IntType) and kind.ge is not None:
                yield field.encode_name, kind.ge


def _schema(spec: dict[str, Any]) -> Schema:
    """A Litestar Schema from a small JSON Schema dict (the keywords our rules use)."""

    def each(key: str) -> list[Schema] | None:
        return [_schema(s) for s in spec[key]] if key in spec else None

    def inner(key: str) -> Schema | None:
        return _schema(spec[key]) if isinstance(spec.get(key), dict) else None

    return Schema(
        type=OpenAPIType(spec["type"]) if "type" in spec else None,
        required=spec.get("required"),
        min_items=spec.get("minItems"),
        min_length=spec.get("minLength"),
        max_length=spec.get("maxLength"),
        pattern=spec.get("pattern"),
        properties={k: _schema(v) for k, v in spec.get("properties", {}).items()} or None,
        items=inner("items"),
        additional_properties=inner("additionalProperties"),
        property_names=inner("propertyNames"),
        max_properties=spec.get("maxProperties"),
        all_of=each("allOf"),
        any_of=each("anyOf"),
        one_of=each("oneOf"),
    )


# What a list's items or a dict's keys and values may be held to. Litestar leaves such
# constraints out of the document when they sit inside `list[...]` or `dict[...]`
# (`list[Tag]`, a send's `vars`); msgspec's own JSON schema keeps them.
_INNER = {
    "items": "items",
    "additionalProperties": "additional_properties",
    "propertyNames": "property_names",
}
# (A dict of dicts, a send's `values`, has them one level further down.)
_CONSTRAINTS = {"minLength", "maxLength", "pattern", "maxProperties", "propertyNames"}


def _nested_constraints(struct: type[msgspec.Struct], schema: Schema) -> None:
    """The constraints inside each field's list or dict, and a dict's size, from msgspec."""
    _, defs = msgspec.json.schema_components([struct])
    for name, field in defs[struct.__name__].get("properties", {}).items():
        found = (schema.properties or {}).get(name)
        if not isinstance(found, Schema):
            continue
        for spec, prop in _alternatives(field, found):
            if "maxProperties" in spec:
                prop.max_properties = spec["maxProperties"]
            for key, attribute in _INNER.items():
                inner = spec.get(key)
                if isinstance(inner, dict) and _CONSTRAINTS & inner.keys():
                    setattr(prop, attribute, _schema(inner))


def _alternatives(spec: dict[str, Any], prop: Schema) -> Iterator[tuple[dict[str, Any], Schema]]:
    """A field's msgspec schema beside Litestar's; for an optional list or dict (`anyOf` with
    null), the list's or dict's member of each."""
    yield spec, prop
    members = [m for m in spec.get("anyOf", []) if m.get("type") in ("array", "object")]
    theirs = [m for m in (prop.one_of or prop.any_of or []) if isinstance(m, Schema)]
    for member in members:
        kind = OpenAPIType.ARRAY if member["type"] == "array" else OpenAPIType.OBJECT
        for candidate in theirs:
            if candidate.type == kind:
                yield member, candidate


def _operations(app: Litestar) -> Iterator[tuple[str, Operation]]:
    for path, item in (app.openapi_schema.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            if (operation := getattr(item, method, None)) is not None:
                yield path, operation


def _document_limits(app: Litestar, keyless: Sequence[str]) -> None:
    """Every route that takes an API key may answer 429 (the request limiter), and every route
    with a body 413 (each has its own size limit)."""
    skip = re.compile("|".join(keyless))
    for path, operation in _operations(app):
        responses = operation.responses or {}
        malformed = responses.get("400")
        if not isinstance(malformed, OpenAPIResponse):
            continue
        if not skip.search(path) and "429" not in responses:
            responses["429"] = dataclasses.replace(
                malformed, description="Quota or request-rate limit reached"
            )
        if operation.request_body is not None and "413" not in responses:
            responses["413"] = dataclasses.replace(
                malformed, description="Request body over this route's limit"
            )


def complete_schema(app: Litestar, keyless: Sequence[str] = ()) -> None:
    """Say in the OpenAPI document what our bodies enforce but Litestar leaves out.

    - `additionalProperties: false` for every body that rejects unknown fields;
    - `minimum` for int fields bounded below by 0 (Litestar drops a falsy bound inside unions);
    - the constraints on list items and dict keys and values (Litestar drops those too);
    - rules across fields a body declares in `__openapi_rules__` (an `allOf` of alternatives);
    - a 422 on every operation: any path, query or header may carry a control character, which
      hub.inputs refuses before the route runs;
    - that no string (object keys included) may hold one: a `pattern` on every free string;
    - the one form of every timestamp we write (hub.calendar.rfc3339): a `pattern` and a
      `description` on each `date-time` of an answer (bodies we read take any offset).
    A client that trusts the schema would otherwise send what we answer 422 to.
    And the limits' answers (429, 413) on every route they apply to; `keyless` are the routes
    that take no API key, which the request limiter leaves alone.
    """
    _every_operation_may_refuse(app)
    schemas = app.openapi_schema.components.schemas or {}
    for struct in _own_structs(schemas):
        _nested_constraints(struct, schemas[struct.__name__])
    _no_control_characters(app)
    _document_limits(app, keyless)
    for struct in _own_structs(schemas):
        schema = schemas[struct.__name__]
        if struct.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        if rules := getattr(struct, "__openapi_rules__", None):
            schema.all_of = _schema(rules).all_of
        for value in (schema.properties or {}).values():
            _timestamps(value, written=not struct.__struct_config__.forbid_unknown_fields)
        for name, minimum in _int_minimums(struct):
            prop = (schema.properties or {}).get(name)
            if isinstance(prop, Schema) and prop.minimum is None:
                prop.minimum = minimum


def _timestamps(schema: Any, *, written: bool) -> None:
    """Describe every `date-time` in a property's schema (unions included)."""
    if not isinstance(schema, Schema):
        return
    if schema.format == OpenAPIFormat.DATE_TIME:
        schema.description = TIMESTAMP_FORM if written else TIMESTAMP_INPUT
        if written:
            schema.pattern = TIMESTAMP_PATTERN
    for child in (*(schema.one_of or []), *(schema.any_of or []), schema.items):
        _timestamps(child, written=written)


def _every_operation_may_refuse(app: Litestar) -> None:
    refused = OpenAPIResponse(
        description="Well-formed but invalid input; `fields` names what is wrong",
        content={
            MediaType.JSON: OpenAPIMediaType(schema=Reference("#/components/schemas/ErrorBody"))
        },
    )
    for item in (app.openapi_schema.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method)
            if operation is not None and operation.responses is not None:
                operation.responses.setdefault("422", refused)


# What hub.inputs refuses, as JSON Schema: C0 controls but tab, LF and CR; DEL; C1. (Strings
# that carry a pattern of their own exclude them there.)
TEXT_PATTERN = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$"


def _no_control_characters(app: Litestar) -> None:
    schema = app.openapi_schema
    roots: list[Any] = list((schema.components.schemas or {}).values())
    for item in (schema.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            if (operation := getattr(item, method)) is not None:
                roots += [getattr(p, "schema", None) for p in operation.parameters or []]
    for root in roots:
        _free_strings_are_text(root)


# How our patterns end in Python (whose `$` also matches before a final line break), and what
# says the same in JSON Schema's ECMA regexes (whose `$`, without the m flag, matches only at the
# very end). Published as the latter: schema-driven clients and fuzzers read ECMA, not lookaheads.
_PYTHON_END, _ECMA_END = "(?!\\n)$", "$"


def _free_strings_are_text(schema: Any) -> None:
    if not isinstance(schema, Schema):
        return
    if schema.pattern and schema.pattern.endswith(_PYTHON_END):
        schema.pattern = schema.pattern.removesuffix(_PYTHON_END) + _ECMA_END
    types = schema.type if isinstance(schema.type, list) else [schema.type]
    if OpenAPIType.STRING in types and not (schema.pattern or schema.enum or schema.format):
        schema.pattern = TEXT_PATTERN
    if isinstance(schema.additional_properties, Schema):
        if schema.property_names is None:
            schema.property_names = Schema(pattern=TEXT_PATTERN)
        elif isinstance(schema.property_names, Schema) and schema.property_names.pattern is None:
            schema.property_names.pattern = TEXT_PATTERN
    children = [
        *(schema.properties or {}).values(),
        *(schema.one_of or []),
        *(schema.any_of or []),
        *(schema.all_of or []),
        schema.items,
        schema.additional_properties,
        schema.property_names,
    ]
    for child in children:
        _free_strings_are_text(child)
