"""STYLE.md: the verdict (and the refresh schedule) are pure: stdlib only, no I/O modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "client_agent"
PURE_ALLOWED = {"__future__", "dataclasses", "datetime", "functools", "typing"}


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("module", ["verdict.py", "schedule.py"])
def test_pure_modules_import_only_harmless_stdlib(module: str) -> None:
    assert imported_modules(PACKAGE / module) <= PURE_ALLOWED


def test_the_agent_never_imports_the_server_or_keys() -> None:
    for path in PACKAGE.glob("*.py"):
        assert not imported_modules(path) & {"server", "keys"}, path.name
