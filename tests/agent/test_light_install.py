"""The agent installs alone: `pip install tessera` brings what client_agent/ imports, not the server's stack.

The slow test builds a fresh venv from this tree without extras, as a customer machine would get
it, and runs its `tessera-agent` against the real server.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from agent_fakes import FakeMachine

from server.cli.entrypoints import INSTALL_HINT, SERVER_MODULES
from tests.conftest import LiveServer, issue_demo_licence

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OURS = {"server", "client_agent", "keys", "tessera_common"}
# What only the server needs: none of it may arrive with the agent.
SERVER_ONLY = ("sqlalchemy", "alembic", "asyncpg", "jwt", "pydantic", "jinja2", "argon2", "aiosmtplib", "nacl")


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _imported(*packages: str) -> set[str]:
    """Top-level modules imported anywhere in these packages, outside the standard library and ours."""
    found: set[str] = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - OURS


def _distributions(modules: set[str]) -> set[str]:
    owners = packages_distributions()
    missing = sorted(m for m in modules if m not in owners)
    assert not missing, f"imported but installed by no distribution: {missing}"
    return {_name(owners[m][0]) for m in modules}


BASE = {_name(r) for r in PROJECT["dependencies"]}
SERVER_EXTRA = {_name(r) for r in PROJECT["optional-dependencies"]["server"]}


def test_the_base_dependencies_are_exactly_what_the_agent_imports() -> None:
    assert _distributions(_imported("client_agent", "tessera_common")) == BASE


def test_the_server_extra_covers_what_the_server_imports() -> None:
    assert _distributions(_imported("server", "keys")) <= BASE | SERVER_EXTRA
    assert not BASE & SERVER_EXTRA


def test_the_guard_checks_every_distribution_of_the_server_extra() -> None:
    assert {_name(d) for d in SERVER_MODULES.values()} == SERVER_EXTRA
    owners = packages_distributions()
    for module, distribution in SERVER_MODULES.items():
        assert _name(distribution) in {_name(d) for d in owners[module]}, module


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with `pip install <this tree>`, no extras, built from a copy (pip builds in the tree)."""
    base = tmp_path_factory.mktemp("light")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for package in sorted(OURS):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def _run(venv: Path, *argv: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in (env or os.environ).items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]], env=clean, cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])  # what is installed matters here, not the server's database
def test_the_agent_alone_activates_and_checks_against_the_real_server(
    light_venv: Path, live_server: LiveServer, machine: FakeMachine, tmp_path: Path
) -> None:
    probe = (
        "import importlib.util, json, sys;"
        f"print(json.dumps([m for m in {list(SERVER_ONLY)!r} if importlib.util.find_spec(m)]));"
        "import client_agent; print(client_agent.__file__)"
    )
    done = _run(light_venv, "python", "-I", "-c", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    present, location = done.stdout.splitlines()
    assert json.loads(present) == []
    assert location.startswith(str(light_venv))  # the installed copy, not this checkout

    for command in ("tessera-server", "tessera-admin"):
        refused = _run(light_venv, command, "--help", cwd=tmp_path)
        assert refused.returncode == 5 and refused.stdout == ""  # unavailable (README, "Exit codes")
        assert refused.stderr.count("\n") == 1 and "server-dependencies-missing" in refused.stderr
        assert INSTALL_HINT in refused.stderr and "sqlalchemy" in refused.stderr.lower()

    licence = issue_demo_licence(live_server, plan_options=("--features", "cam"))
    state_dir = tmp_path / "state"
    env = os.environ | {
        "TESSERA_AGENT_STATE_DIR": str(state_dir),
        "TESSERA_AGENT_SYSROOT": str(machine.root),
        "TESSERA_AGENT_JWKS": str(live_server.jwks_path),
        "TESSERA_AGENT_SERVER": live_server.url,
    }
    product = licence["product"]
    activated = _run(light_venv, "tessera-agent", "activate", licence["key"], "--product", product, "--json",
                     env=env, cwd=tmp_path)  # fmt: skip
    assert activated.returncode == 0, activated.stderr
    assert json.loads(activated.stdout)["product"] == product

    question = ("tessera-agent", "check", "--product", product, "--version", "1.0", "--released", "2025-01-15")
    entitled = _run(light_venv, *question, "--feature", "cam", "--json", env=env, cwd=tmp_path)
    assert entitled.returncode == 0 and json.loads(entitled.stdout)["code"] == "entitled", entitled.stderr
    refused = _run(light_venv, *question, "--feature", "nesting", "--json", env=env, cwd=tmp_path)
    assert refused.returncode == 1 and json.loads(refused.stdout)["code"] == "feature-not-licensed"
