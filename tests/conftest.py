"""Fixtures: the real server as a process on a free loopback port, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "test-passphrase-" + secrets.token_hex(4)
POSTGRES_URL = os.environ.get("TESSERA_TEST_POSTGRES_URL")
SKIP_POSTGRES = "PostgreSQL not tested: set TESSERA_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        assert POSTGRES_URL
        conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """A database of this test's own: an SQLite file, or a new database on the shared PostgreSQL."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'tessera.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip(SKIP_POSTGRES)
    name = "tessera_t_" + secrets.token_hex(6)
    _pg_admin(f'CREATE DATABASE "{name}"')
    base, _, _ = POSTGRES_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def admin(db_url: str, keys_dir: Path, *args: str) -> Any:
    """Run `tessera-admin --json …` in-process; raise on a non-zero exit."""
    from server.cli.admin import main

    out, err = io.StringIO(), io.StringIO()
    previous = os.environ.get("TESSERA_KEY_PASSPHRASE")
    os.environ["TESSERA_KEY_PASSPHRASE"] = PASSPHRASE
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--db", db_url, "--keys-dir", str(keys_dir), "--json", *args])
    finally:
        if previous is None:
            os.environ.pop("TESSERA_KEY_PASSPHRASE", None)
        else:
            os.environ["TESSERA_KEY_PASSPHRASE"] = previous
    if code != 0:
        raise AdminError(code, json.loads(err.getvalue()))
    return json.loads(out.getvalue())


class AdminError(Exception):
    def __init__(self, exit_code: int, problem: dict[str, Any]) -> None:
        super().__init__(f"tessera-admin exited {exit_code}: {problem}")
        self.exit_code = exit_code
        self.problem = problem


@dataclass
class ServerProcess:
    db_url: str
    keys_dir: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    workers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        env = os.environ | {"TESSERA_KEY_PASSPHRASE": PASSPHRASE, "PYTHONUNBUFFERED": "1"} | self.extra_env
        argv = [sys.executable, "-m", "server.cli", "serve", "--db", self.db_url,
                "--keys-dir", str(self.keys_dir), "--port", str(self.port)]  # fmt: skip
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class LiveServer:
    """A migrated database, a keyring and a running server; `admin` talks to the same database and keys."""

    def __init__(self, db_url: str, directory: Path, *, workers: int = 1) -> None:
        from server.db.migrate import upgrade

        self.db_url = db_url
        self.directory = directory
        self.keys_dir = directory / "keys"
        upgrade(db_url)
        self.admin("keys", "generate")
        self.jwks_path = directory / "jwks.json"
        self.admin("keys", "export-jwks", "--out", str(self.jwks_path))
        self.process = ServerProcess(db_url, self.keys_dir, directory / "server.log", workers=workers)

    @property
    def url(self) -> str:
        return self.process.url

    def admin(self, *args: str) -> Any:
        return admin(self.db_url, self.keys_dir, *args)

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()


def issue_demo_licence(
    server: LiveServer,
    *,
    model: str = "activation",
    kind: str = "perpetual",
    seats: int = 2,
    tolerance: int = 1,
    released_versions: tuple[tuple[str, date], ...] = (("1.0", date(2025, 1, 15)),),
    plan_options: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A fresh product, plan, customer and licence; returns {"id", "key", "product"} (and more)."""
    tag = secrets.token_hex(3)
    product = f"prod-{tag}"
    server.admin("product", "add", product, "--name", f"Product {tag}")
    for version, released in released_versions:
        server.admin("release", "add", product, version, "--released", released.isoformat())
    plan = f"plan-{tag}"
    server.admin("plan", "add", plan, "--kind", kind, "--model", model, "--tolerance", str(tolerance), *plan_options)
    customer = f"Customer {tag}"
    server.admin("customer", "add", customer)
    issued = server.admin("licence", "issue", "--customer", customer, "--product", product, "--plan", plan,
                          "--seats", str(seats))  # fmt: skip
    return issued


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    with fresh_database(backend, tmp_path) as url:
        yield url


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(database_url, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
