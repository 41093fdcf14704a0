"""tessera-admin backup | restore: an online SQLite backup taken while the real server writes, restored and served."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from server.domain.hosts import indexed_digests
from tests.conftest import (
    POSTGRES_URL,
    AdminError,
    LiveServer,
    ServerProcess,
    admin,
    fresh_database,
    issue_demo_licence,
)
from tests.support.agent import FakeAgent
from tests.support.burst import Burst
from tests.support.http import post


def activate(url: str, agent: FakeAgent, licence: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return post(url + "/v1/activations", agent.activation_body(licence["key"], licence["product"]))


def refuse(db_url: str, keys_dir: Path, *args: str) -> str:
    with pytest.raises(AdminError) as refused:
        admin(db_url, keys_dir, *args)
    assert refused.value.exit_code != 0
    return str(refused.value.problem["code"])


def live_seats(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT licence_id, count(*) FROM activations WHERE ended_at IS NULL GROUP BY licence_id")
        return {str(lid): int(n) for lid, n in rows}


def licence_rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {str(lid): int(n) for lid, n in conn.execute("SELECT id, seats_in_use FROM licences")}


def activation_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {str(r[0]) for r in conn.execute("SELECT id FROM activations")}


def hex_id(activation_id: str) -> str:
    return activation_id.replace("-", "")  # SQLAlchemy keeps UUIDs as 32 hex digits on SQLite


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Any:
    server = LiveServer(f"sqlite:///{tmp_path / 'live.db'}", tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_online_backup_during_a_burst_restores_to_a_server_that_serves_it(sqlite_server: LiveServer) -> None:
    server, tmp = sqlite_server, sqlite_server.directory
    licences = [issue_demo_licence(server, seats=10_000) for _ in range(3)]
    # A deactivated seat before the backup: the restored seat count must not count it.
    leaver = FakeAgent()
    status, left = activate(server.url, leaver, licences[0])
    assert status == 201
    proof = leaver.proof(left["activation_id"], "tessera-deactivate+jwt")
    assert post(f"{server.url}/v1/activations/{left['activation_id']}/deactivate", {"proof": proof})[0] == 200

    with Burst(server.url, licences) as burst:
        burst.wait_for(60)
        backup_started = time.monotonic()
        report = server.admin("backup", "--out", str(tmp / "backup.db"))
        backup_ended = time.monotonic()
        written_before = burst.count()
        burst.wait_for(written_before + 60)  # keep writing after the backup
    assert not burst.failures, burst.failures[:3]

    backup = Path(report["path"])
    assert backup == tmp / "backup.db"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert report["size"] == backup.stat().st_size and report["revision"]
    assert not [p.name for p in tmp.iterdir() if p.name.startswith((".backup.db", "backup.db-"))]  # no temp, no WAL

    restored_path = tmp / "restored" / "tessera.db"
    restored = server.admin("--db", f"sqlite:///{restored_path}", "restore", "--from", str(backup))
    assert restored["replaced"] is False and restored["revision"] == report["revision"]
    assert restored["rows"] == report["rows"]

    # The copy is one instant: every seat acknowledged before the backup began is there, and none asked after it.
    ids = activation_ids(restored_path)
    before = [d for d in burst.done if d[1] < backup_started]
    after = [d for d in burst.done if d[0] > backup_ended]
    assert before and after
    assert {hex_id(d[2]) for d in before} <= ids
    assert not {hex_id(d[2]) for d in after} & ids
    assert report["rows"]["activations"] == len(ids)
    # The database's invariants hold in the copy: seats_in_use is the number of live activations per licence.
    live = live_seats(restored_path)
    assert licence_rows(restored_path) == {lid: live.get(lid, 0) for lid in licence_rows(restored_path)}
    assert hex_id(left["activation_id"]) in ids and sum(live.values()) == len(ids) - 1
    with sqlite3.connect(restored_path) as conn:
        seats = conn.execute("SELECT host_components, host_match FROM activations WHERE ended_at IS NULL").fetchall()
        indexed = sum(len(indexed_digests(json.loads(components), match)) for components, match in seats)
        assert len(seats) == sum(live.values()) and indexed >= len(seats)
        assert conn.execute("SELECT count(*) FROM activation_digests").fetchone()[0] == indexed
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert admin(f"sqlite:///{restored_path}", server.keys_dir, "audit", "verify")["ok"]

    # A server on the restored file: old tokens refresh, a known host gets its seat back, counts agree.
    second = ServerProcess(f"sqlite:///{restored_path}", server.keys_dir, tmp / "restored.log")
    second.start()
    try:
        _, _, aid, agent, which = before[0]
        status, refreshed = post(f"{second.url}/v1/activations/{aid}/refresh", {"proof": agent.proof(aid)})
        assert status == 200, refreshed
        status, again = activate(second.url, agent, licences[which])
        assert status == 200 and again["activation_id"] == aid
        _, _, lost_id, lost_agent, _ = after[0]
        status, gone = post(f"{second.url}/v1/activations/{lost_id}/refresh", {"proof": lost_agent.proof(lost_id)})
        assert status == 404 and gone["code"] == "activation-not-found"
        shown = admin(f"sqlite:///{restored_path}", server.keys_dir, "licence", "show", licences[which]["id"])
        assert shown["seats_in_use"] == live[hex_id(licences[which]["id"])]
        # While that server holds the file, restoring over it is refused even with --force.
        code = refuse(f"sqlite:///{restored_path}", server.keys_dir, "restore", "--from", str(backup), "--force")
        assert code == "restore-target-in-use"
    finally:
        second.stop()


def _schema_only(path: Path, revision: str | None) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE things (x INTEGER)")
        conn.execute("INSERT INTO things VALUES (1)")
        if revision is not None:
            conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
            conn.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
    conn.close()
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(directory: Path) -> dict[str, str]:
    return {p.name: _digest(p) for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture
def stopped_installation(tmp_path: Path) -> tuple[str, Path, Path]:
    """A migrated SQLite installation with a licence and one backup of it; no server running."""
    server = LiveServer(f"sqlite:///{tmp_path / 'tessera.db'}", tmp_path)
    issue_demo_licence(server)
    backup = Path(server.admin("backup", "--out", str(tmp_path / "good.db"))["path"])
    return server.db_url, server.keys_dir, backup


@pytest.mark.parametrize(
    ("make_source", "code"),
    [
        pytest.param(lambda d, good: d / "missing.db", "restore-source-missing", id="missing-file"),
        pytest.param(lambda d, good: d, "restore-source-missing", id="a-directory"),
        pytest.param(
            lambda d, good: (d / "notes.txt").write_text("not a database\n" * 100) and d / "notes.txt",
            "restore-not-sqlite",
            id="not-a-database",
        ),
        pytest.param(lambda d, good: _schema_only(d / "other.db", None), "restore-wrong-schema", id="foreign-schema"),
        pytest.param(
            lambda d, good: _schema_only(d / "future.db", "ffffffffffff"), "restore-wrong-schema", id="unknown-revision"
        ),
        pytest.param(lambda d, good: _truncated(good, d / "cut.db"), "restore-corrupt", id="truncated"),
    ],
)
def test_restore_refuses_bad_backups_and_writes_nothing(
    stopped_installation: tuple[str, Path, Path], tmp_path: Path, make_source: Any, code: str
) -> None:
    _, keys_dir, good = stopped_installation
    source = make_source(tmp_path, good)
    target_dir = tmp_path / "target"
    target_dir.mkdir()
    before = _listing(tmp_path)
    assert refuse(f"sqlite:///{target_dir / 'new.db'}", keys_dir, "restore", "--from", str(source)) == code
    assert list(target_dir.iterdir()) == []
    assert _listing(tmp_path) == before


def _truncated(good: Path, out: Path) -> Path:
    data = good.read_bytes()
    out.write_bytes(data[: len(data) // 2])  # the header still says the full size: pages are missing
    return out


def test_restore_refuses_a_target_that_holds_data_unless_forced(stopped_installation: tuple[str, Path, Path]) -> None:
    db_url, keys_dir, good = stopped_installation
    target = Path(db_url.removeprefix("sqlite:///"))
    admin(db_url, keys_dir, "product", "add", "written-after-backup")
    before = _digest(target)
    assert refuse(db_url, keys_dir, "restore", "--from", str(good)) == "restore-target-exists"
    assert _digest(target) == before

    restored = admin(db_url, keys_dir, "restore", "--from", str(good), "--force")
    assert restored["replaced"] is True
    codes = {p["code"] for p in _products(target)}
    assert "written-after-backup" not in codes and len(codes) == 1
    assert not Path(str(target) + "-wal").exists()


def _products(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT code FROM products")]


def test_restore_over_a_schema_without_rows_needs_no_force(
    stopped_installation: tuple[str, Path, Path], tmp_path: Path
) -> None:
    _, keys_dir, good = stopped_installation
    from server.db.migrate import upgrade

    empty = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(empty)
    # --db may also follow the command, as in `tessera-admin restore --from FILE --db URL`.
    restored = admin(f"sqlite:///{tmp_path / 'unused.db'}", keys_dir, "restore", "--from", str(good), "--db", empty)
    assert not (tmp_path / "unused.db").exists()
    assert restored["replaced"] is True and restored["rows"]["licences"] == 1


def test_backup_refusals_write_nothing(stopped_installation: tuple[str, Path, Path], tmp_path: Path) -> None:
    db_url, keys_dir, good = stopped_installation
    out = tmp_path / "out"
    out.mkdir()
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    assert refuse(missing, keys_dir, "backup", "--out", str(out / "b.db")) == "backup-source-missing"
    assert not (tmp_path / "nope.db").exists()  # never created by looking at it
    (tmp_path / "text.db").write_text("hello\n" * 50)
    assert refuse(f"sqlite:///{tmp_path / 'text.db'}", keys_dir, "backup", "--out", str(out)) == "backup-not-sqlite"
    foreign = _schema_only(tmp_path / "foreign.db", None)
    assert refuse(f"sqlite:///{foreign}", keys_dir, "backup", "--out", str(out)) == "backup-schema-missing"
    assert refuse(db_url, keys_dir, "backup", "--out", str(good)) == "backup-exists"
    assert refuse(db_url, keys_dir, "backup", "--out", str(tmp_path / "no" / "dir.db")) == "backup-out-invalid"
    assert list(out.iterdir()) == []
    # Into a directory: a timestamped file; --force replaces a named one.
    into_dir = admin(db_url, keys_dir, "backup", "--out", str(out))
    assert Path(into_dir["path"]).parent == out and Path(into_dir["path"]).name.startswith("tessera-")
    assert admin(db_url, keys_dir, "backup", "--out", str(good), "--force")["rows"]["licences"] == 1


def test_restore_into_postgresql_is_refused_with_the_way_to_do_it(stopped_installation: tuple[str, Path, Path]) -> None:
    _, keys_dir, good = stopped_installation
    code = refuse("postgresql://postgres@127.0.0.1:1/none", keys_dir, "restore", "--from", str(good))
    assert code == "restore-unsupported"


def test_postgresql_backup_without_pg_dump_says_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stopped_installation: tuple[str, Path, Path]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    code = refuse("postgresql://postgres@127.0.0.1:1/none", stopped_installation[1], "backup", "--out", str(tmp_path))
    assert code == "backup-pg-dump-missing"


@pytest.mark.postgres
def test_postgresql_backup_is_a_pg_dump_that_pg_restore_loads(tmp_path: Path) -> None:
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL not tested")
    with fresh_database("postgres", tmp_path) as url, fresh_database("postgres", tmp_path) as copy_url:
        server = LiveServer(url, tmp_path)
        issue_demo_licence(server, seats=5)
        report = server.admin("backup", "--out", str(tmp_path / "pg.dump"))
        assert report["format"] == "pg_dump-custom" and report["rows"]["licences"] == 1
        dump = Path(report["path"])
        assert stat.S_IMODE(dump.stat().st_mode) == 0o600
        import subprocess

        subprocess.run(["pg_restore", "--no-owner", "-d", copy_url, str(dump)], check=True, timeout=60)
        assert _pg_counts(copy_url) == report["rows"]


def _pg_counts(url: str) -> dict[str, int]:
    import asyncpg

    async def read() -> dict[str, int]:
        conn = await asyncpg.connect(url)
        try:
            names = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                "AND table_type = 'BASE TABLE' AND table_name <> 'alembic_version'"
            )
            return {r[0]: await conn.fetchval(f'SELECT count(*) FROM "{r[0]}"') for r in names}
        finally:
            await conn.close()

    return asyncio.run(read())


def test_backup_file_is_self_contained(stopped_installation: tuple[str, Path, Path]) -> None:
    _, _, good = stopped_installation
    with sqlite3.connect(f"file:{good}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    assert not os.path.exists(str(good) + "-wal")


UNITS = Path(__file__).resolve().parent.parent / "systemd"


def _service_lines(key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in (UNITS / "tessera-backup.service").read_text().splitlines()
        if line.startswith(key + "=")
    ]


def test_the_backup_unit_commands_back_up_and_prune(
    stopped_installation: tuple[str, Path, Path], tmp_path: Path
) -> None:
    """The unit's own ExecStart and ExecStartPost, run here with the paths moved into a temporary directory."""
    import shlex

    db_url, _, _ = stopped_installation
    (environment,) = [e for e in _service_lines("Environment") if e.startswith("TESSERA_DB=")]
    assert environment == "TESSERA_DB=sqlite:////var/lib/tessera/tessera.db"
    backups = tmp_path / "backups"
    backups.mkdir()
    old = backups / "tessera-20200101T000000Z.db"
    old.write_bytes(b"an old backup")
    os.utime(old, (time.time() - 30 * 86400,) * 2)
    admin_bin = str(Path(sys.executable).with_name("tessera-admin"))
    env = os.environ | {"TESSERA_DB": db_url}
    for key in ("ExecStart", "ExecStartPost"):
        (line,) = _service_lines(key)
        argv = [
            admin_bin if a == "/usr/bin/tessera-admin" else a.replace("/var/lib/tessera-backups", str(backups))
            for a in shlex.split(line)
        ]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        if key == "ExecStart":
            report = json.loads(done.stdout)
            assert Path(report["path"]).parent == backups and report["rows"]["licences"] == 1
    assert [p.name for p in backups.iterdir()] == [Path(report["path"]).name]  # the old one was pruned


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_backup_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    admin_bin = str(Path(sys.executable).with_name("tessera-admin"))
    for name in ("tessera-backup.service", "tessera-backup.timer"):
        (tmp_path / name).write_text((UNITS / name).read_text().replace("/usr/bin/tessera-admin", admin_bin))
    units = [str(tmp_path / "tessera-backup.service"), str(tmp_path / "tessera-backup.timer")]
    done = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    complaints = [line for line in done.stderr.splitlines() if "tessera-backup" in line]
    assert done.returncode == 0 and complaints == [], done.stderr
