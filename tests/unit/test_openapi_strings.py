"""The document states the string rules the bodies enforce, in a form JSON Schema clients read:
constraints inside lists and dicts (a send's tags, its `vars`) are there, and patterns are ECMA
(no Python-only lookahead: `(?!\\n)$` is published as `$`, which in ECMA means the very end)."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from hub.app import create_app
from hub.settings import Settings


def _document() -> dict[str, Any]:
    return msgspec.to_builtins(create_app(Settings()).openapi_schema.to_schema())  # type: ignore[no-any-return]


def test_patterns_are_ecma_and_mean_what_the_server_checks() -> None:
    text = json.dumps(_document())
    assert "(?!" not in text
    send = _document()["components"]["schemas"]["SendRequest"]["properties"]
    tag = send["to_tags"]["items"]
    assert tag["maxLength"] == 50
    # ECMA's `$` matches only at the end; a name with a line break is refused by both.
    ecma_end = tag["pattern"].removesuffix("$") + r"\Z"  # ECMA's `$`, in Python
    assert re.search(ecma_end, "书记")
    assert not re.search(ecma_end, "书记\n")
    assert send["vars"]["maxProperties"] == 50
    assert send["vars"]["additionalProperties"]["maxLength"] == 500
    assert "【】" in send["vars"]["additionalProperties"]["pattern"]
    assert send["vars"]["propertyNames"]["maxLength"] == 40
    assert "pattern" in send["vars"]["propertyNames"]  # no control characters in a key either
