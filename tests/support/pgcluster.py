"""A private PostgreSQL cluster for tests that stop, restart, fill or break their database.

Such tests must never touch the shared server: each gets its own ``initdb`` in a temporary directory, its own
free loopback port and its own Unix socket directory, and is always stopped at teardown. PostgreSQL refuses to
run as root, so when the tests run as root the cluster is created and run as the ``postgres`` OS user.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

START_TIMEOUT = 30


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None when PostgreSQL is not installed."""
    candidates: list[Path] = []
    override = os.environ.get("TESSERA_TEST_PG_BINDIR")
    if override:
        candidates.append(Path(override))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path))

    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin"):
        candidates.extend(Path(p) for p in sorted(glob.glob(pattern), key=version, reverse=True))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _run_as() -> tuple[list[str], int | None, int | None]:
    """The command prefix (and owner ids) to run PostgreSQL's tools as a non-root user."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("tests run as root and there is no 'postgres' OS user to run a private PostgreSQL cluster as")
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"], user.pw_uid, user.pw_gid
    setpriv = shutil.which("setpriv")
    if setpriv:
        ids = [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
        return [setpriv, *ids], user.pw_uid, user.pw_gid
    pytest.skip("tests run as root and neither runuser nor setpriv is installed to drop to the postgres user")


class PgCluster:
    """``initdb`` + ``pg_ctl`` on a loopback port of its own. Use :func:`private_cluster` to get one."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable
        self.prefix, uid, gid = _run_as()
        # Not pytest's tmp_path: its parents are 0700 root, which the postgres user cannot traverse.
        self.base = Path(tempfile.mkdtemp(prefix="tessera-pg-"))
        if uid is not None and gid is not None:
            os.chown(self.base, uid, gid)
        self.data = self.base / "data"
        self.socket_dir = self.base
        self.log_path = self.base / "postgres.log"
        self.port = free_port()
        self.running = False

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _tool(self, tool: str, *args: str, timeout: float = START_TIMEOUT + 10) -> subprocess.CompletedProcess[str]:
        argv = [*self.prefix, str(self.bindir / tool), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.base)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{self.log_tail()}")
        return done

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def init(self) -> None:
        self._tool("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-instructions",
                   *(() if self.durable else ("--no-sync",)))  # fmt: skip
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "60",
            "shared_buffers": "16MB",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def start(self) -> None:
        self._tool("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", str(START_TIMEOUT), "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects clients and shuts down cleanly; ``immediate`` is a crash (recovery at next start)."""
        if self.running:
            self._tool("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(START_TIMEOUT), "stop")
            self.running = False

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def execute(self, *statements: str, database: str = "postgres") -> None:
        """Run each statement on one session, outside any transaction block (ALTER SYSTEM, CREATE DATABASE)."""
        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(self.database_url(database), timeout=10)
            try:
                for sql in statements:
                    await conn.execute(sql, timeout=30)
            finally:
                await conn.close()

        asyncio.run(run())

    def fetch(self, sql: str, *args: Any, database: str = "postgres") -> list[Any]:
        import asyncpg

        async def run() -> list[Any]:
            conn = await asyncpg.connect(self.database_url(database), timeout=10)
            try:
                return list(await conn.fetch(sql, *args, timeout=30))
            finally:
                await conn.close()

        return asyncio.run(run())

    def create_database(self, name: str = "tessera") -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def destroy(self) -> None:
        try:
            if self.running:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.stop("immediate")
            if self.running:  # pg_ctl could not stop it: kill the postmaster by its own pid file
                with contextlib.suppress(OSError, ValueError, IndexError):
                    pid = int((self.data / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, 9)
                self.running = False
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def private_cluster(*, durable: bool = False, extra_conf: Sequence[str] = ()) -> Iterator[PgCluster]:
    """A started cluster of this test's own, always stopped and removed afterwards; skips if PostgreSQL is absent."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found via pg_config --bindir, "
            "/usr/lib/postgresql/*/bin or PATH: install postgresql to run the private-cluster tests"
        )
    cluster = PgCluster(bindir, durable=durable)
    try:
        cluster.init()
        if extra_conf:
            with (cluster.data / "postgresql.conf").open("a") as conf:
                conf.writelines(line + "\n" for line in extra_conf)
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
