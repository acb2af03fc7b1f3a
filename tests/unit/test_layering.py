"""`hub` imports `tenants`; `tenants` never imports `hub`."""

from __future__ import annotations

import ast
from pathlib import Path

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
