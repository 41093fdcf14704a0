"""STYLE.md: the verdict (and the refresh schedule) are pure: stdlib only, no I/O modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "client_agent"
PURE_ALLOWED = {"__future__", "dataclasses", "datetime", "functools", "typing"}
# The one list of identifying fingerprint kinds, shared with the server: constants only.
PURE_SHARED = {"tessera_common.fingerprints"}


def imported_modules(path: Path, *, full: bool = False) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name if full else alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module if full else node.module.split(".")[0])
    return found


@pytest.mark.parametrize("module", ["verdict.py", "schedule.py"])
def test_pure_modules_import_only_harmless_stdlib(module: str) -> None:
    imported = imported_modules(PACKAGE / module, full=True)
    assert {m for m in imported if m not in PURE_SHARED and m.split(".")[0] not in PURE_ALLOWED} == set()
    for shared in imported & PURE_SHARED:
        path = PACKAGE.parent / (shared.replace(".", "/") + ".py")
        assert imported_modules(path) <= PURE_ALLOWED, shared


def test_the_agent_never_imports_the_server_or_keys() -> None:
    for path in PACKAGE.glob("*.py"):
        assert not imported_modules(path) & {"server", "keys"}, path.name
