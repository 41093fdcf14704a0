"""tessera-admin migrate-db: an SQLite installation, built by the real CLI and server, moved to a new PostgreSQL."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select as io_select
import sqlite3
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.ext.asyncio import create_async_engine

from server.domain.hosts import indexed_digests
from tests.conftest import AdminError, LiveServer, ServerProcess, admin, free_port, fresh_database, issue_demo_licence
from tests.support.agent import FakeAgent
from tests.support.burst import Burst
from tests.support.http import post

pytestmark = pytest.mark.postgres


def activate(url: str, agent: FakeAgent, licence: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return post(url + "/v1/activations", agent.activation_body(licence["key"], licence["product"]))


def refuse(*args: str, keys_dir: Path) -> str:
    with pytest.raises(AdminError) as refused:
        admin("sqlite:///unused.db", keys_dir, *args)
    return str(refused.value.problem["code"])


def _key(row: tuple[Any, ...]) -> str:
    return repr(row)


def sqlite_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    from server.db.models import Base

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: sorted((tuple(r) for r in conn.execute(select(t))), key=_key)
                for t in Base.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def indexed_digest_count(activations: list[tuple[Any, ...]]) -> int:
    """The digest rows the server keeps for these activations: the indexed ones of each live seat."""
    columns = [c.name for c in _table("activations").columns]
    records = [dict(zip(columns, r, strict=True)) for r in activations]
    return sum(len(indexed_digests(r["host_components"], r["host_match"])) for r in records if r["ended_at"] is None)


def postgres_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    from server.db.database import normalise_url
    from server.db.models import Base

    async def read() -> dict[str, list[tuple[Any, ...]]]:
        engine = create_async_engine(normalise_url(url))
        try:
            async with engine.connect() as conn:
                out = {}
                for t in Base.metadata.sorted_tables:
                    rows = (await conn.execute(select(t))).all()
                    out[t.name] = sorted((tuple(r) for r in rows), key=_key)
                return out
        finally:
            await engine.dispose()

    return asyncio.run(read())


@pytest.fixture
def installation(tmp_path: Path) -> dict[str, Any]:
    """An SQLite installation made through the admin CLI and the real server over HTTP; the server is stopped."""
    server = LiveServer(f"sqlite:///{tmp_path / 'tessera.db'}", tmp_path)
    server.admin("reseller", "add", "Reseller One")
    server.admin("customer", "add", "Resold Customer", "--reseller", "Reseller One")
    plain = issue_demo_licence(server, seats=3)
    rich = issue_demo_licence(
        server, seats=5, kind="subscription", plan_options=("--features", "cam,fem", "--no-virtual")
    )
    server.admin("token", "create", "--role", "support", "--label", "support desk")
    server.start()
    agents: dict[str, tuple[FakeAgent, str, dict[str, Any]]] = {}
    try:
        for name, licence in (("a", plain), ("b", plain), ("c", rich), ("gone", rich)):
            agent = FakeAgent(hostname=f"host-{name}")
            status, body = activate(server.url, agent, licence)
            assert status == 201, body
            agents[name] = (agent, body["activation_id"], licence)
        agent, aid, _ = agents["gone"]
        proof = agent.proof(aid, "tessera-deactivate+jwt")
        assert post(f"{server.url}/v1/activations/{aid}/deactivate", {"proof": proof})[0] == 200
        agent, aid, _ = agents["a"]
        assert post(f"{server.url}/v1/activations/{aid}/refresh", {"proof": agent.proof(aid)})[0] == 200
    finally:
        server.stop()
    return {"server": server, "agents": agents, "licences": [plain, rich]}


def test_an_installation_moves_to_postgresql_exactly(installation: dict[str, Any], tmp_path: Path) -> None:
    server: LiveServer = installation["server"]
    source_rows = sqlite_rows(server.db_url)
    with fresh_database("postgres", tmp_path) as target:
        report = server.admin("migrate-db", "--from", server.db_url, "--to", target)
        assert report["tables"] == {name: len(rows) for name, rows in source_rows.items()}
        assert report["tables"]["activations"] == 4
        assert report["tables"]["activation_digests"] == indexed_digest_count(source_rows["activations"]) > 0
        assert report["target"] == target and report["source"] == server.db_url
        # Every value of every table round-trips: aware datetimes, UUIDs, JSON, booleans.
        assert postgres_rows(target) == source_rows
        # So the hash-chained audit trail verifies on PostgreSQL with the same chain heads.
        trail = admin(server.db_url, server.keys_dir, "audit", "verify")
        moved = admin(target, server.keys_dir, "audit", "verify")
        assert moved["ok"] and moved["events"] == trail["events"] > 0
        assert moved["heads_digest"] == trail["heads_digest"]

        on_postgres = ServerProcess(target, server.keys_dir, tmp_path / "pg.log")
        on_postgres.start()
        try:
            for licence in installation["licences"]:
                before = admin(server.db_url, server.keys_dir, "licence", "show", licence["id"])
                after = admin(target, server.keys_dir, "licence", "show", licence["id"])
                assert after == before
            agent, aid, licence = installation["agents"]["b"]
            status, refreshed = post(f"{on_postgres.url}/v1/activations/{aid}/refresh", {"proof": agent.proof(aid)})
            assert status == 200, refreshed
            status, again = activate(on_postgres.url, agent, licence)
            assert status == 200 and again["activation_id"] == aid
            agent, aid, _ = installation["agents"]["gone"]
            status, ended = post(f"{on_postgres.url}/v1/activations/{aid}/refresh", {"proof": agent.proof(aid)})
            assert status == 409 and ended["code"] == "activation-ended"
            # The seat count carried over: the plain licence has 3 seats, 2 in use, so one more fits and no more.
            plain = installation["licences"][0]
            assert activate(on_postgres.url, FakeAgent(), plain)[0] == 201
            status, full = activate(on_postgres.url, FakeAgent(), plain)
            assert status == 409 and full["code"] == "seats-exhausted"
        finally:
            on_postgres.stop()

        # Into a target that now holds data: refused, and nothing in it changes.
        held = postgres_rows(target)
        code = refuse("migrate-db", "--from", server.db_url, "--to", target, keys_dir=server.keys_dir)
        assert code == "migrate-db-target-not-empty"
        assert postgres_rows(target) == held


def test_a_failure_half_way_leaves_the_target_without_a_row(installation: dict[str, Any], tmp_path: Path) -> None:
    server: LiveServer = installation["server"]
    # SQLite does not enforce VARCHAR lengths; PostgreSQL does. The activations come after the licences.
    path = server.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE activations SET hostname = ? WHERE hostname = 'host-c'", ("h" * 300,))
    conn.close()
    with fresh_database("postgres", tmp_path) as target:
        code = refuse("migrate-db", "--from", server.db_url, "--to", target, keys_dir=server.keys_dir)
        assert code == "migrate-db-failed"
        assert all(rows == [] for rows in postgres_rows(target).values())
        # Fixed at the source, the same target takes the migration (a schema without rows is empty).
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE activations SET hostname = 'host-c' WHERE length(hostname) = 300")
        conn.close()
        assert server.admin("migrate-db", "--from", server.db_url, "--to", target)["tables"]["activations"] == 4


def test_a_live_source_is_copied_as_one_consistent_snapshot(tmp_path: Path) -> None:
    server = LiveServer(f"sqlite:///{tmp_path / 'live.db'}", tmp_path)
    licences = [issue_demo_licence(server, seats=10_000) for _ in range(3)]
    server.start()
    try:
        with fresh_database("postgres", tmp_path) as target, Burst(server.url, licences) as burst:
            burst.wait_for(50)
            started = time.monotonic()
            report = server.admin("migrate-db", "--from", server.db_url, "--to", target, "--batch-rows", "7")
            ended = time.monotonic()
            burst.wait_for(burst.count() + 30)
            burst.stop.set()
            rows = postgres_rows(target)
            assert not burst.failures
            copied = {r[0] for r in rows["activations"]}
            assert {uuid.UUID(d[2]) for d in burst.done if d[1] < started} <= copied
            assert not {uuid.UUID(d[2]) for d in burst.done if d[0] > ended} & copied
            assert report["tables"]["activations"] == len(copied)
            assert len(rows["activation_digests"]) == indexed_digest_count(rows["activations"])
            live: dict[Any, int] = {}
            columns = [c.name for c in _table("activations").columns]
            for r in rows["activations"]:
                record = dict(zip(columns, r, strict=True))
                if record["ended_at"] is None:
                    live[record["licence_id"]] = live.get(record["licence_id"], 0) + 1
            licence_columns = [c.name for c in _table("licences").columns]
            seats = {
                rec["id"]: rec["seats_in_use"]
                for rec in (dict(zip(licence_columns, r, strict=True)) for r in rows["licences"])
            }
            assert seats == {lid: live.get(lid, 0) for lid in seats}
    finally:
        server.stop()


def _table(name: str) -> Any:
    from server.db.models import Base

    return Base.metadata.tables[name]


def test_bad_requests_are_refused_and_create_nothing(tmp_path: Path) -> None:
    server = LiveServer(f"sqlite:///{tmp_path / 'tessera.db'}", tmp_path)
    keys = server.keys_dir
    source = server.db_url
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/tessera"
    assert refuse("migrate-db", "--from", source, "--to", source, keys_dir=keys) == "migrate-db-same-database"
    other_sqlite = f"sqlite:///{tmp_path / 'other.db'}"
    assert refuse("migrate-db", "--from", source, "--to", other_sqlite, keys_dir=keys) == "migrate-db-unsupported"
    assert refuse("migrate-db", "--from", nowhere, "--to", source, keys_dir=keys) == "migrate-db-unsupported"
    assert not (tmp_path / "other.db").exists()
    assert refuse("migrate-db", "--from", source, "--to", nowhere, keys_dir=keys) == "migrate-db-target-unavailable"
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    assert refuse("migrate-db", "--from", missing, "--to", nowhere, keys_dir=keys) == "migrate-db-source-missing"
    assert not (tmp_path / "missing.db").exists()
    assert refuse("migrate-db", "--from", "mysql://x/y", "--to", nowhere, keys_dir=keys) == "database-url-invalid"

    from server.db.migrate import upgrade

    unmigrated = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(unmigrated, "base")
    future = tmp_path / "future.db"
    future.write_bytes(Path(source.removeprefix("sqlite:///")).read_bytes())
    with sqlite3.connect(future) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'fffffffff'")
    conn.close()
    with fresh_database("postgres", tmp_path) as target:
        code = refuse("migrate-db", "--from", unmigrated, "--to", target, keys_dir=keys)
        assert code == "migrate-db-wrong-schema"
        code = refuse("migrate-db", "--from", f"sqlite:///{future}", "--to", target, keys_dir=keys)
        assert code == "migrate-db-wrong-schema"
        previous = _previous_revision()
        if previous is not None:  # an installation one migration behind must be migrated first
            older = f"sqlite:///{tmp_path / 'older.db'}"
            upgrade(older, previous)
            code = refuse("migrate-db", "--from", older, "--to", target, keys_dir=keys)
            assert code == "migrate-db-source-outdated"
        assert postgres_tables(target) == set()  # not even the schema was made
        missing_db = target + "_absent"
        code = refuse("migrate-db", "--from", source, "--to", missing_db, keys_dir=keys)
        assert code == "migrate-db-target-unavailable"


def _previous_revision() -> str | None:
    from alembic.script import ScriptDirectory

    from server.db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite:///unused.db"))
    head = script.get_revision(script.get_current_head())
    return None if head is None or head.down_revision is None else str(head.down_revision)


def postgres_tables(url: str) -> set[str]:
    import asyncpg

    async def read() -> set[str]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
            return {r[0] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(read())


def test_postgresql_keeps_room_on_activation_pages_for_in_place_refreshes(tmp_path: Path) -> None:
    """Migration 0003: a refresh (which changes no indexed column) can stay on its page."""
    import asyncpg

    from server.db.migrate import upgrade

    async def options(url: str) -> list[str] | None:
        conn = await asyncpg.connect(url)
        try:
            sql = "SELECT reloptions FROM pg_class WHERE relname = 'activations'"
            found: list[str] | None = await conn.fetchval(sql)
            return found
        finally:
            await conn.close()

    with fresh_database("postgres", tmp_path) as url:
        upgrade(url)
        assert asyncio.run(options(url)) == ["fillfactor=80"]
        from alembic import command

        from server.db.migrate import alembic_config

        command.downgrade(alembic_config(url), "0002")
        assert asyncio.run(options(url)) is None


def test_at_a_terminal_migrate_db_shows_its_progress_and_to_a_script_nothing(
    installation: dict[str, Any], tmp_path: Path
) -> None:
    server: LiveServer = installation["server"]
    admin_bin = str(Path(sys.executable).with_name("tessera-admin"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    with fresh_database("postgres", tmp_path) as target:
        argv = [admin_bin, "--json", "migrate-db", "--from", server.db_url, "--to", target, "--batch-rows", "3"]
        pid, terminal = pty.fork()
        if pid == 0:  # the child: its stdout and stderr are the terminal, 100 columns wide
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
            os.execve(argv[0], argv, env)
        seen, deadline = b"", time.monotonic() + 120
        while time.monotonic() < deadline:
            if io_select.select([terminal], [], [], 0.5)[0]:
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, seen[-2000:]
        assert b"100%" in seen and b"rows" in seen, seen[-2000:]
    with fresh_database("postgres", tmp_path / "again") as target:
        quiet = subprocess.run([*argv[:4], server.db_url, "--to", target], capture_output=True, text=True,
                               env=env, timeout=120, check=False)  # fmt: skip
        assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
