"""tessera-admin backup | restore at a terminal: a progress bar on stderr, and to a script only the report.

The SQLite copy goes in steps that each report progress, yet stays one snapshot: the steps read the one read
transaction held on the source, so writes made between them are not in the copy and do not restart it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from server.db import backup as data
from tests.conftest import POSTGRES_URL, LiveServer, fresh_database, issue_demo_licence

ADMIN = str(Path(sys.executable).with_name("tessera-admin"))


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}


def at_a_terminal(*argv: str) -> tuple[int, str, bytes]:
    """Run tessera-admin with stderr on a pseudo-terminal (100 columns) and stdout a pipe: (exit, stdout, terminal)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen([ADMIN, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal,
                               env=clean_env())  # fmt: skip
    os.close(terminal)
    seen, deadline = b"", time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 0.5)[0]:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # EIO: the program closed its end
                    break
                if not chunk:
                    break
                seen += chunk
        assert process.stdout is not None
        stdout = process.stdout.read().decode()
        return process.wait(timeout=60), stdout, seen
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
        if process.stdout is not None:
            process.stdout.close()


def in_a_script(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ADMIN, *argv], capture_output=True, text=True, env=clean_env(), timeout=120, check=False)


@pytest.fixture
def installation(tmp_path: Path) -> LiveServer:
    """A migrated SQLite installation holding a licence; no server running."""
    server = LiveServer(f"sqlite:///{tmp_path / 'tessera.db'}", tmp_path)
    issue_demo_licence(server)
    return server


def test_at_a_terminal_backup_and_restore_draw_a_bar_on_stderr(installation: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "backup.db"
    code, stdout, terminal = at_a_terminal("--db", installation.db_url, "--json", "backup", "--out", str(out))
    assert code == 0, terminal[-2000:]
    assert b"100%" in terminal and b"B/s" in terminal, terminal[-2000:]  # bytes copied, at a rate
    report = json.loads(stdout)  # the bar went to stderr only: stdout is the report
    assert report["path"] == str(out) and report["rows"]["licences"] == 1

    target = tmp_path / "restored" / "tessera.db"
    code, stdout, terminal = at_a_terminal("--db", f"sqlite:///{target}", "--json", "restore", "--from", str(out))
    assert code == 0, terminal[-2000:]
    assert b"100%" in terminal and b"B/s" in terminal, terminal[-2000:]
    restored = json.loads(stdout)
    assert restored["rows"] == report["rows"] and target.stat().st_size == restored["size"]


def test_to_a_script_backup_and_restore_print_only_their_report(installation: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "backup.db"
    done = in_a_script("--db", installation.db_url, "--json", "backup", "--out", str(out))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    report = json.loads(done.stdout)
    assert report["rows"]["licences"] == 1

    target = tmp_path / "restored.db"
    done = in_a_script("--db", f"sqlite:///{target}", "restore", "--from", str(out))  # as text for a person
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("path ") and "%|" not in done.stdout and target.is_file()


def test_a_refusal_at_a_terminal_is_the_error_line_without_a_bar(installation: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "taken.db"
    out.write_text("")
    code, stdout, terminal = at_a_terminal("--db", installation.db_url, "--json", "backup", "--out", str(out))
    assert code == 4 and stdout == ""
    assert json.loads(terminal.decode().strip())["code"] == "backup-exists"


def _padded(path: Path, megabytes: int) -> None:
    """An SQLite database in WAL mode that backup and restore accept (at a revision of ours older than the head)
    and a few megabytes of data."""
    revisions, head = data.known_revisions()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    conn.execute("INSERT INTO alembic_version VALUES (?)", (min(revisions - {head}),))
    conn.execute("CREATE TABLE things (n INTEGER, padding BLOB)")
    conn.executemany("INSERT INTO things VALUES (?, randomblob(4096))", [(n,) for n in range(megabytes * 256)])
    conn.close()


def test_an_sqlite_backup_in_steps_is_one_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source.db"
    _padded(source, 4)
    monkeypatch.setattr(data, "STEP_PAGES", 64)
    writer = sqlite3.connect(source, isolation_level=None, timeout=5)
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        if len(calls) <= 5:  # another connection commits between the steps
            writer.execute("INSERT INTO things VALUES (-1, NULL)")

    try:
        report = data.backup_sqlite(source, tmp_path / "copy.db", progress=progress)
    finally:
        writer.close()
    assert len(calls) > 10  # 4 MiB in steps of 64 pages
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len({total for _, total in calls}) == 1 and calls[-1][0] == calls[-1][1]
    assert calls[-1][1] == Path(report.path).stat().st_size  # bytes: every page of the copy
    assert report.rows["things"] == 4 * 256  # as at the first step: none of the rows written during the copy
    with sqlite3.connect(source) as conn:
        assert conn.execute("SELECT count(*) FROM things WHERE n = -1").fetchone()[0] == 5
    conn.close()

    restored_calls: list[tuple[int, int]] = []
    restored = data.restore_sqlite(Path(report.path), tmp_path / "restored.db",
                                   progress=lambda done, total: restored_calls.append((done, total)))  # fmt: skip
    assert restored.rows == report.rows
    assert len(restored_calls) > 10 and restored_calls[-1] == (restored.size, restored.size)


@pytest.mark.parametrize(
    ("line", "information"),
    [
        pytest.param('pg_dump: dumping contents of table "public.licences"', True, id="table"),
        pytest.param("pg_dump: reading extensions", True, id="information"),
        pytest.param('pg_dump: error: query failed: ERROR:  permission denied for table "licences"', False, id="error"),
        pytest.param("pg_dump: detail: Query was: LOCK TABLE public.licences", False, id="detail"),
        pytest.param("pg_dump: warning: archive items not in correct section order", False, id="warning"),
        pytest.param("could not connect to server", False, id="not-pg_dump"),
    ],
)
def test_pg_dump_information_is_followed_and_every_other_line_kept_for_the_error(line: str, information: bool) -> None:
    calls: list[tuple[int, int]] = []
    tables = data._TableProgress({"licences": 3, "products": 2}, lambda done, total: calls.append((done, total)))
    assert tables.line(line) is information
    tables.finish()
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)


@pytest.mark.postgres
def test_a_postgresql_backup_reports_rows_table_by_table(tmp_path: Path) -> None:
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL not tested")
    with fresh_database("postgres", tmp_path) as url:
        server = LiveServer(url, tmp_path)
        issue_demo_licence(server, seats=5)
        calls: list[tuple[int, int]] = []
        report = data.backup(url, tmp_path / "pg.dump", progress=lambda done, total: calls.append((done, total)))
        total = sum(report.rows.values())
        assert calls[0] == (0, total) and calls[-1] == (total, total)
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)
        assert len({done for done, _ in calls if 0 < done < total}) >= 2  # tables done one after another
        assert len(calls) >= len(report.rows)  # a report as each table's data is dumped

        code, stdout, terminal = at_a_terminal("--db", url, "--json", "backup", "--out", str(tmp_path / "tty.dump"))
        assert code == 0, terminal[-2000:]
        assert b"100%" in terminal and b"rows" in terminal, terminal[-2000:]
        assert json.loads(stdout)["rows"] == report.rows
        quiet = in_a_script("--db", url, "--json", "backup", "--out", str(tmp_path / "quiet.dump"))
        assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
        assert json.loads(quiet.stdout)["rows"] == report.rows
