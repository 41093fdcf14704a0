"""Move an installation from SQLite to PostgreSQL, generically over the SQLAlchemy metadata.

The target's schema is made by the same Alembic migrations as always; then
every table of ``Base.metadata`` is copied in foreign-key order, in batches,
inside ONE transaction on the target, so a failure leaves no row behind. The
source is read inside one read transaction: a live source is copied as it
was at one instant (a consistent snapshot), and writes made after that instant
are not in the copy (docs/DATA.md says when to stop the server).

Values go through the models' column types both ways (UTCDateTime, Uuid, JSON,
Boolean), so they round-trip exactly. A table added to the models is copied
without a change here.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Integer, Table, create_engine, event, func, insert, select, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.db.backup import VERSION_TABLE, DataError, known_revisions, open_sqlite, quote, sqlite_file
from server.db.database import normalise_url

BATCH_ROWS = 5000


@dataclass(frozen=True)
class MigrationReport:
    source: str
    target: str
    revision: str | None
    tables: dict[str, int]
    sequences_reset: list[str]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Progress = Callable[[int, int], None]  # (rows copied so far, rows in all)


def migrate_database(
    source_url: str, target_url: str, *, batch_rows: int = BATCH_ROWS, progress: Progress | None = None
) -> MigrationReport:
    started = time.monotonic()
    source, target = _parse(source_url), _parse(target_url)
    if source.render_as_string(hide_password=False) == target.render_as_string(hide_password=False):
        raise DataError("migrate-db-same-database", "the source and the target are the same database")
    if source.get_backend_name() != "sqlite" or target.get_backend_name() != "postgresql":
        raise DataError(
            "migrate-db-unsupported",
            f"migrate-db moves SQLite to PostgreSQL, not {source.get_backend_name()} to {target.get_backend_name()}",
        )
    source_path = sqlite_file(source_url)
    assert source_path is not None
    revision = _check_source(source_path)
    shown_target = target.set(drivername="postgresql").render_as_string(hide_password=True)
    asyncio.run(_check_target_empty(target, shown_target))

    from server.db.migrate import upgrade

    try:
        upgrade(target_url)
    except (SQLAlchemyError, OSError) as exc:
        raise DataError("migrate-db-failed", f"creating the schema on {shown_target} failed: {exc}") from exc
    reader = _snapshot_reader(source_path)
    try:
        with reader.connect() as src, src.begin():
            tables, reset = asyncio.run(_copy_all(src, target, shown_target, batch_rows, progress))
    except DataError:
        raise
    except (SQLAlchemyError, OSError, sqlite3.Error) as exc:
        raise DataError("migrate-db-failed", f"copying into {shown_target} failed, nothing was kept: {exc}") from exc
    finally:
        reader.dispose()
    return MigrationReport(
        source=source.set(drivername="sqlite").render_as_string(hide_password=True),
        target=shown_target,
        revision=revision,
        tables=tables,
        sequences_reset=reset,
        seconds=round(time.monotonic() - started, 3),
    )


def _parse(url: str) -> URL:
    try:
        return normalise_url(url)
    except Exception as exc:  # SQLAlchemy's URL parser raises ArgumentError; ours ValueError
        raise DataError("database-url-invalid", f"{url!r}: {exc}") from exc


def _check_source(path: Path) -> str | None:
    conn = open_sqlite(path, mode="rw", code_prefix="migrate-db", schema_code="migrate-db-wrong-schema")
    try:
        revision = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()  # noqa: S608 - a constant
    finally:
        conn.close()
    current = None if revision is None else str(revision[0])
    known, head = known_revisions()
    if current not in known:
        raise DataError("migrate-db-wrong-schema", f"{path} is at schema {current!r}, which this Tessera does not know")
    if current != head:
        raise DataError(
            "migrate-db-source-outdated",
            f"{path} is at schema {current}, not {head}: run `tessera-server migrate --db sqlite:///{path}` first",
        )
    return current


def _target_engine(target: URL) -> AsyncEngine:
    return create_async_engine(target, connect_args={"timeout": 10}, pool_size=1, max_overflow=0)


async def _check_target_empty(target: URL, shown: str) -> None:
    """Refuse a target that holds any row (a schema without rows, left by a failed run, is fine)."""
    engine = _target_engine(target)
    try:
        async with engine.connect() as conn:
            names = (
                await conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                    )
                )
            ).scalars()
            holding = []
            for name in sorted(names):
                if name == VERSION_TABLE:
                    continue
                if (await conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {quote(name)})"))).scalar():  # noqa: S608
                    holding.append(name)
    except (OSError, DBAPIError) as exc:
        raise DataError("migrate-db-target-unavailable", f"cannot reach {shown}: {_reason(exc)}") from exc
    finally:
        await engine.dispose()
    if holding:
        raise DataError(
            "migrate-db-target-not-empty",
            f"{shown} already holds data (in {', '.join(holding)}): migrate into a new, empty database",
        )


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip()


def _snapshot_reader(path: Path) -> Engine:
    """An engine whose transactions are plain deferred SQLite read transactions: one snapshot, no write lock."""
    uri = f"{path.absolute().as_uri()}?mode=rw"
    engine = create_engine(
        "sqlite+pysqlite://",
        creator=lambda: sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA query_only=ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")
        # The snapshot starts at the first read: take it now, before any count.
        conn.exec_driver_sql(f"SELECT count(*) FROM {VERSION_TABLE}")  # noqa: S608 - a constant

    return engine


async def _copy_all(
    src: Connection, target: URL, shown: str, batch_rows: int, progress: Progress | None
) -> tuple[dict[str, int], list[str]]:
    engine = _target_engine(target)
    try:
        async with engine.begin() as pg:
            return await pg.run_sync(_copy_tables, src, batch_rows, progress)
    except (OSError, ConnectionError) as exc:
        raise DataError("migrate-db-target-unavailable", f"lost {shown} while copying: {exc}") from exc
    finally:
        await engine.dispose()


def _copy_tables(
    pg: Connection, src: Connection, batch_rows: int, progress: Progress | None = None
) -> tuple[dict[str, int], list[str]]:
    from server.db.models import Base

    counts: dict[str, int] = {}
    sizes = {
        t.name: int(src.execute(select(func.count()).select_from(t)).scalar_one()) for t in Base.metadata.sorted_tables
    }
    total, done = sum(sizes.values()), 0
    if progress is not None:
        progress(0, total)
    for table in Base.metadata.sorted_tables:
        expected = sizes[table.name]
        copied = 0
        result = src.execution_options(yield_per=batch_rows).execute(select(table))
        for rows in result.partitions():
            pg.execute(insert(table), [dict(row._mapping) for row in rows])
            copied += len(rows)
            done += len(rows)
            if progress is not None:
                progress(done, total)
        present = int(pg.execute(select(func.count()).select_from(table)).scalar_one())
        if not expected == copied == present:
            raise DataError(
                "migrate-db-count-mismatch",
                f"{table.name}: {expected} rows in the source, {copied} read, {present} in the target",
            )
        counts[table.name] = present
    return counts, _reset_sequences(pg, Base.metadata.sorted_tables)


def _reset_sequences(pg: Connection, tables: list[Table]) -> list[str]:
    """Application-assigned keys need nothing; a serial or identity column's sequence must follow the copy."""
    reset = []
    for table in tables:
        for column in table.columns:
            if column.identity is None and not (
                column is table.autoincrement_column and isinstance(column.type, Integer)
            ):
                continue
            sequence = pg.execute(
                text("SELECT pg_get_serial_sequence(:table, :column)"), {"table": table.name, "column": column.name}
            ).scalar()
            if sequence is None:
                continue
            pg.execute(
                text(
                    f"SELECT setval(:sequence, coalesce(max({quote(column.name)}), 1), max({quote(column.name)}) "  # noqa: S608
                    f"IS NOT NULL) FROM {quote(table.name)}"
                ),
                {"sequence": sequence},
            )
            reset.append(f"{table.name}.{column.name}")
    return reset
