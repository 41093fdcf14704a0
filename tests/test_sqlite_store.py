"""The SQLite store's writer: what it promises beyond running units (tests/test_faults.py has the faults)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from server.db.database import CHECKPOINT_INTERVAL, WAL_BACKSTOP_PAGES, open_database


def _rows_in_main_file(db: Path, scratch: Path) -> int | None:
    """Rows of `t` in the database file alone, as if the WAL were lost: only checkpointed pages count."""
    shutil.copyfile(db, scratch)
    for suffix in ("-wal", "-shm"):
        Path(f"{scratch}{suffix}").unlink(missing_ok=True)
    try:
        with sqlite3.connect(scratch) as conn:
            count: int = conn.execute("SELECT count(*) FROM t").fetchone()[0]
        conn.close()
        return count
    except sqlite3.DatabaseError:  # copied halfway through a checkpoint, or the table is not there yet
        return None


def test_commits_reach_the_database_file_from_the_checkpointer_not_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "store.db"

    async def go() -> tuple[int | None, float, int]:
        db = open_database(f"sqlite:///{path}")
        try:
            await db.run(lambda conn: conn.exec_driver_sql("CREATE TABLE t (x INTEGER)"))

            def insert(conn: Any, i: int) -> None:
                conn.exec_driver_sql("INSERT INTO t VALUES (?)", (i,))

            await asyncio.gather(*(db.run(insert, i) for i in range(500)))
            backstop = await db.run(lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar())
            started = time.monotonic()
            found = None
            while time.monotonic() - started < 10 * CHECKPOINT_INTERVAL + 5:
                found = _rows_in_main_file(path, tmp_path / "copy.db")
                if found == 500:
                    break
                await asyncio.sleep(0.05)
            return found, time.monotonic() - started, backstop
        finally:
            await db.close()

    found, waited, backstop = asyncio.run(go())
    # The writer itself would checkpoint only after WAL_BACKSTOP_PAGES: 500 one-row commits are far fewer pages.
    assert backstop == WAL_BACKSTOP_PAGES
    assert found == 500, f"after {waited:.1f} s the database file holds {found} of 500 committed rows"


def test_a_failed_statement_does_not_carry_its_bound_values(tmp_path: Path) -> None:
    """Error texts may be logged: the values bound to a failed statement (key hashes, agent keys) stay out."""
    from sqlalchemy.exc import IntegrityError

    secret = "hash-of-a-licence-key-0123456789"

    async def go() -> str:
        db = open_database(f"sqlite:///{tmp_path / 'store.db'}")
        try:
            await db.run(lambda conn: conn.exec_driver_sql("CREATE TABLE t (x TEXT PRIMARY KEY)"))

            def twice(conn: Any) -> None:
                from sqlalchemy import text

                conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": secret})
                conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": secret})

            try:
                await db.run(twice)
            except IntegrityError as exc:
                return str(exc)
            raise AssertionError("the duplicate was accepted")
        finally:
            await db.close()

    message = asyncio.run(go())
    assert "UNIQUE" in message and secret not in message
