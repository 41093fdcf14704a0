"""Hot-path statements: compiled once per dialect by SQLAlchemy, run on the driver's own connection.

An activation runs about ten statements. Through SQLAlchemy's execution layer each costs 20-70 µs of
Python (execution context, result metadata, cache look-up) against 1-5 µs on the `sqlite3` cursor or an
asyncpg prepared statement, which was most of what an activation cost. A `Hot` statement is still written
with SQLAlchemy Core against the models and compiled by SQLAlchemy for each dialect, with SQLAlchemy's own
bind and result processors for its column types, so what it writes is read back identically by every other
statement; only the execution is direct:

* SQLite: the `sqlite3` connection inside the unit's `Connection`. The writer thread has already begun the
  unit's transaction (`BEGIN IMMEDIATE`), so the statements are part of it.
* PostgreSQL: the asyncpg connection, awaited through SQLAlchemy's greenlet bridge (units run inside
  `run_sync`), with asyncpg's per-connection prepared-statement cache. SQLAlchemy's adapter begins its
  transaction lazily on its first statement; a hot statement that comes first begins it the same way.

A driver error becomes the same SQLAlchemy exception the execution layer would raise (with the bound values
hidden), so units, the writer's fault handling and the problem middleware see no difference.
"""

from __future__ import annotations

import asyncio
import re
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from greenlet import GreenletExit
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.util import await_only

Processor = Callable[[Any], Any] | None
_COUNT = re.compile(rb"(\d+)$")
_REQUIRED = object()


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    # Parameter key, bind processor and the statement's own value (a literal such as the 1 in `seats + 1`;
    # _REQUIRED for a parameter the caller must give), in positional order.
    binds: tuple[tuple[str, Processor, Any], ...]
    row: Any  # a namedtuple class of the result columns (None for a statement without rows)
    results: tuple[Processor, ...]

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for key, proc, own in self.binds:
            value = params[key] if own is _REQUIRED or key in params else own
            out.append(value if proc is None else proc(value))
        return tuple(out)

    def make_row(self, values: Sequence[Any]) -> Any:
        return self.row._make([v if proc is None else proc(v) for v, proc in zip(values, self.results, strict=True)])


class Hot:
    """One statement, compiled on first use for each dialect. `columns`: the insert's column keys."""

    def __init__(self, statement: ClauseElement, *, columns: Iterable[str] | None = None) -> None:
        self.statement = statement
        self._columns = list(columns) if columns is not None else None
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = self._compile(dialect)
        return found

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled: Any = self.statement.compile(dialect=dialect, column_keys=self._columns)
        processors = compiled._bind_processors
        binds = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            binds.append((bind.key, processors.get(name), _REQUIRED if bind.required else bind.effective_value))
        columns = compiled._result_columns
        results = tuple(column[3]._cached_result_processor(dialect, None) for column in columns)
        row = namedtuple("HotRow", [column[0] for column in columns], rename=True) if columns else None  # type: ignore[misc]
        return _Compiled(compiled.string, tuple(binds), row, results)

    # -- running

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        compiled = self.compiled(conn.dialect)
        return [compiled.make_row(r) for r in _driver(conn).fetch(conn, compiled, compiled.args(params))]

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        found = self.rows(conn, params)
        return found[0] if found else None

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        row = self.first(conn, params)
        return None if row is None else row[0]

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Runs a statement without rows; returns the number of rows it changed."""
        compiled = self.compiled(conn.dialect)
        return _driver(conn).execute(conn, compiled, compiled.args(params))

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            compiled = self.compiled(conn.dialect)
            _driver(conn).execute_many(conn, compiled, [compiled.args(r) for r in rows])


class _SQLite:
    """The `sqlite3` connection: statements are cached by the module's own statement cache."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def fetch(self, conn: Connection, compiled: _Compiled, args: tuple[Any, ...]) -> list[Any]:
        try:
            return self.raw.execute(compiled.sql, args).fetchall()  # type: ignore[no-any-return]
        except Exception as exc:
            raise _wrapped(conn, compiled.sql, exc) from exc

    def execute(self, conn: Connection, compiled: _Compiled, args: tuple[Any, ...]) -> int:
        try:
            return int(self.raw.execute(compiled.sql, args).rowcount)
        except Exception as exc:
            raise _wrapped(conn, compiled.sql, exc) from exc

    def execute_many(self, conn: Connection, compiled: _Compiled, rows: list[tuple[Any, ...]]) -> None:
        try:
            self.raw.executemany(compiled.sql, rows)
        except Exception as exc:
            raise _wrapped(conn, compiled.sql, exc) from exc


class _Asyncpg:
    """The asyncpg connection under SQLAlchemy's adapter, awaited from the unit's greenlet."""

    __slots__ = ("adapted", "raw")

    def __init__(self, adapted: Any) -> None:
        self.adapted = adapted
        self.raw = adapted.driver_connection

    def _run(self, conn: Connection, compiled: _Compiled, call: Callable[[], Any]) -> Any:
        adapted = self.adapted
        try:
            if adapted._transaction is None:  # SQLAlchemy's adapter begins on its first statement: so do we
                await_only(adapted._start_transaction())
            return await_only(call())
        except (asyncio.CancelledError, GreenletExit):
            # The unit ran out of time (or the request went away) mid-statement: as SQLAlchemy does, the
            # connection is terminated, never rolled back by a round trip to a server that may not answer.
            conn.invalidate()
            raise
        except Exception as exc:
            translated: Exception = exc
            try:
                adapted._handle_exception(exc)  # raises asyncpg's error as the adapter's DBAPI error class
            except Exception as dbapi_error:
                translated = dbapi_error
            raise _wrapped(conn, compiled.sql, translated) from exc

    def fetch(self, conn: Connection, compiled: _Compiled, args: tuple[Any, ...]) -> list[Any]:
        return self._run(conn, compiled, lambda: self.raw.fetch(compiled.sql, *args))  # type: ignore[no-any-return]

    def execute(self, conn: Connection, compiled: _Compiled, args: tuple[Any, ...]) -> int:
        status = self._run(conn, compiled, lambda: self.raw.execute(compiled.sql, *args))
        found = _COUNT.search(status.encode())  # "UPDATE 1", "INSERT 0 1", "DELETE 3"
        return int(found.group(1)) if found else 0

    def execute_many(self, conn: Connection, compiled: _Compiled, rows: list[tuple[Any, ...]]) -> None:
        self._run(conn, compiled, lambda: self.raw.executemany(compiled.sql, rows))


def _driver(conn: Connection) -> _SQLite | _Asyncpg:
    """The pooled connection's driver wrapper, made once per DBAPI connection (kept in its pool record)."""
    record = conn.connection
    driver = record.info.get("hot_driver")
    if driver is None or driver.raw is not record.driver_connection:  # a reconnect after an invalidation
        dbapi = record.dbapi_connection
        driver = _Asyncpg(dbapi) if conn.dialect.name == "postgresql" else _SQLite(record.driver_connection)
        record.info["hot_driver"] = driver
    return driver  # type: ignore[no-any-return]


def _wrapped(conn: Connection, sql: str, error: Exception) -> Exception:
    """The driver's error as SQLAlchemy's execution layer would raise it: hidden parameters, and a dropped
    connection invalidated so the pool does not hand it out again."""
    dialect = conn.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    if not isinstance(error, dbapi_error):
        return error
    disconnect = dialect.is_disconnect(error, conn.connection.dbapi_connection, None)
    if disconnect:
        conn.invalidate(error)
    wrapped = DBAPIError.instance(
        sql, None, error, dbapi_error, hide_parameters=True, connection_invalidated=disconnect, dialect=dialect
    )
    return wrapped
