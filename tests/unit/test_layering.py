"""`hub` imports `tenants`; `tenants` never imports `hub`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import hub
import tenants


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_tenants_never_imports_hub() -> None:
    offenders = [
        str(path) for path in Path(tenants.__file__).parent.rglob("*.py") if "hub" in _imports(path)
    ]
    assert offenders == []


def test_every_answer_built_by_hand_is_a_hub_response() -> None:
    """The app's response_class (hub.wire.HubResponse) writes every timestamp in the API's one
    form; an answer a handler builds itself must be one too, or its times escape that form."""
    bare = re.compile(r"(?<![\w.])Response\(")
    roots = (Path(hub.__file__).parent, Path(tenants.__file__).parent)
    offenders = [
        f"{path}:{n}"
        for root in roots
        for path in root.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line)
    ]
    assert offenders == []
