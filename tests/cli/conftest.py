"""tessera-admin and tessera-server as a script meets them: installed programs run as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> Any:
        """The `{"code", "detail"}` a `--json` run writes to stderr when it fails."""
        return json.loads(self.stderr)


def run(program: str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Run:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    done = subprocess.run(
        [str(BIN / program), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=base | {"TESSERA_KEY_PASSPHRASE": PASSPHRASE} | (env or {}),
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Installation:
    """A migrated SQLite database and a keyring directory, both this test's own."""

    db_url: str
    keys_dir: Path

    def admin(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Run:
        return run("tessera-admin", "--db", self.db_url, "--keys-dir", str(self.keys_dir), *args,
                   stdin=stdin, env=env)  # fmt: skip

    def ok(self, *args: str) -> Any:
        done = self.admin("--json", *args)
        assert done.exit_code == 0, done.stderr
        return done.json()


@pytest.fixture
def installation(tmp_path: Path) -> Installation:
    db_url = f"sqlite:///{tmp_path / 'tessera.db'}"
    migrated = run("tessera-server", "migrate", "--db", db_url)
    assert migrated.exit_code == 0, migrated.stderr
    return Installation(db_url, tmp_path / "keys")


def licence_with_release(installation: Installation, tag: str = "cli") -> dict[str, Any]:
    """A product with release 1.0, a plan, a customer and a licence of one seat."""
    installation.ok("product", "add", f"prod-{tag}")
    installation.ok("release", "add", f"prod-{tag}", "1.0", "--released", "2025-01-15")
    installation.ok("plan", "add", f"plan-{tag}", "--kind", "perpetual", "--model", "activation")
    installation.ok("customer", "add", f"Customer {tag}")
    return dict(installation.ok("licence", "issue", "--customer", f"Customer {tag}", "--product", f"prod-{tag}",
                                "--plan", f"plan-{tag}", "--seats", "1"))  # fmt: skip


def codes(done: Run) -> tuple[int, str]:
    return done.exit_code, done.error()["code"]
