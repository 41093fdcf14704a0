"""Running units of work against SQLite or PostgreSQL.

A unit of work is a plain function ``fn(conn, *args)`` over a synchronous
SQLAlchemy ``Connection``; services are written once and run on both stores:

* PostgreSQL: an asyncpg pool; ``AsyncConnection.run_sync`` runs the function
  on the event loop through SQLAlchemy's greenlet bridge (no thread hop), one
  transaction per unit.
* SQLite: one writer thread owns one connection. Units queue up and run in
  batches inside a single ``BEGIN IMMEDIATE`` transaction with one durable
  commit (group commit), then the loop is woken once per batch. If any unit in
  a batch raises, the batch is rolled back and its units are run again one
  transaction each, so every unit gets its own outcome and a failed unit
  leaves nothing behind. A second thread checkpoints the WAL into the
  database file behind the writer, so no commit waits for a checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import create_async_engine

T = TypeVar("T")
Unit = Callable[..., Any]

BATCH_LIMIT = 256

# SQLite checkpoints (copying committed pages from the WAL into the database file, then an fsync of the
# file) run on a thread of their own, at most every CHECKPOINT_INTERVAL seconds after a commit, so no
# request waits for one. A committing writer checkpoints itself only if the WAL grows past
# WAL_BACKSTOP_PAGES (40 MB of 4 KiB pages) because the checkpointer could not keep up or failed.
CHECKPOINT_INTERVAL = 0.5
WAL_BACKSTOP_PAGES = 10_000

# PostgreSQL outages must fail fast, never hang a request (docs/FAULTS.md). A refused or black-holed connect
# gives up after CONNECT_TIMEOUT; a request waiting for a pooled connection after POOL_TIMEOUT; a whole unit of
# work (checkout, statements, commit) after UNIT_TIMEOUT, which also covers a server that stops answering on
# an open connection. Units are small OLTP transactions, and the agent gives up after 15 s: answer before.
CONNECT_TIMEOUT = 5.0
POOL_TIMEOUT = 5.0
UNIT_TIMEOUT = 10.0


class DatabaseUnavailable(Exception):
    """The store cannot be reached or written (a 503, not a 500)."""


def normalise_url(url: str) -> URL:
    """Accept the URLs people write (``sqlite:///f.db``, ``postgresql://…``) and pick our drivers."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://…")


class Database(Protocol):
    dialect: str

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def run_single(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, int]: ...


def sqlite_engine(url: URL) -> Any:
    # hide_parameters: a failed statement's error text (which may reach a log) never carries the bound
    # values, such as a licence key's hash or an agent's public key.
    engine = create_engine(url, poolclass=None, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # durable: an acknowledged activation survives power loss
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")  # other processes on the same file
        # The checkpointer thread copies the WAL into the file; a commit checkpoints only as a backstop.
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Take the write lock up front: reads and the writes that depend on them are one decision.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    outcome: tuple[bool, Any] = field(default=(False, None))


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, url: URL) -> None:
        self._engine = sqlite_engine(url)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sqlite-writer", daemon=True)
        self._checkpointer = _Checkpointer(self._engine)
        self._started = False
        self._lock = threading.Lock()

    def _ensure_started(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()
                self._checkpointer.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        self._ensure_started()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put(_Job(fn, args, future))
        return await future

    async def run_single(self, fn: Callable[..., T], *args: Any) -> T:
        """A unit whose reads need no lock and whose writes are one statement: here, like any other."""
        return await self.run(fn, *args)

    def stats(self) -> dict[str, int]:
        """For /metrics: units waiting for the single writer."""
        return {"writer_queue_depth": self._queue.qsize()}

    async def close(self) -> None:
        if self._started:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.stop)
        self._engine.dispose()

    # -- the writer thread ----------------------------------------------
    def _serve(self) -> None:
        conn: Connection | None = None
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < BATCH_LIMIT:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            try:
                if conn is None:
                    conn = self._engine.connect()
                self._run_batch(conn, batch)
                self._checkpointer.nudge()
            except (OperationalError, DBAPIError) as exc:
                # The file is gone, locked too long, read-only or the disk is full.
                failure = DatabaseUnavailable(f"database unavailable: {exc.orig}")
                for job in batch:
                    if not job.outcome[0]:
                        job.outcome = (False, failure)
                if conn is not None:
                    conn.close()
                    conn = None
            self._deliver(batch)
        if conn is not None:
            conn.close()

    def _run_batch(self, conn: Connection, batch: list[_Job]) -> None:
        if len(batch) > 1:
            try:
                with conn.begin():
                    results = [job.fn(conn, *job.args) for job in batch]
            except OperationalError as exc:
                if _is_unavailable(exc):
                    raise
            except Exception:  # noqa: S110 - one unit failed: rerun each on its own below
                pass
            else:
                for job, result in zip(batch, results, strict=True):
                    job.outcome = (True, result)
                return
        for job in batch:
            try:
                with conn.begin():
                    result = job.fn(conn, *job.args)
                # Only now, after COMMIT returned: a commit that fails (disk full, I/O error) is no success.
                job.outcome = (True, result)
            except OperationalError as exc:
                if _is_unavailable(exc):
                    raise
                job.outcome = (False, exc)
            except Exception as exc:
                job.outcome = (False, exc)

    @staticmethod
    def _deliver(batch: list[_Job]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in batch:
            by_loop.setdefault(job.future.get_loop(), []).append(job)
        for loop, jobs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed; nobody is waiting
                loop.call_soon_threadsafe(_settle, jobs)


class _Checkpointer:
    """PASSIVE checkpoints on a connection and thread of their own: they never take the write lock,
    so the writer goes on committing to the WAL while pages are copied into the file behind it."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sqlite-checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def nudge(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wanted.set()
        if self._thread.is_alive():
            self._thread.join()

    def _serve(self) -> None:
        connection: Any = None
        while True:
            self._wanted.wait()
            if self._stopping.wait(CHECKPOINT_INTERVAL):  # let commits gather: one checkpoint, one fsync
                break
            self._wanted.clear()
            try:
                if connection is None:
                    connection = self._engine.raw_connection()
                cursor = connection.cursor()
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                cursor.fetchall()
                cursor.close()
            except Exception:  # a full or read-only disk: the writer reports it to requests; retry later
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.close()
                    connection = None
        if connection is not None:
            connection.close()


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():
            continue
        ok, value = job.outcome
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


def _is_unavailable(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return any(
        marker in text for marker in ("locked", "readonly", "read-only", "disk", "unable to open", "i/o", "full")
    )


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: URL, *, pool_size: int = 20, unit_timeout: float = UNIT_TIMEOUT) -> None:
        self._unit_timeout = unit_timeout
        self._engine = create_async_engine(
            url,
            hide_parameters=True,  # as for SQLite: no bound values in error texts
            pool_size=pool_size,
            # No overflow: an overflow connection lives for one unit, so under load every request paid a
            # connect, a TLS negotiation and asyncpg's statement preparation; a unit waits for a pooled one.
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT,
            # No pool_pre_ping: with asyncpg it costs three round trips per unit (BEGIN, ping, ROLLBACK). After
            # PostgreSQL restarts, the first unit to draw a dead connection answers 503 and SQLAlchemy then
            # discards the whole pool, so the requests after it get fresh connections (tests/test_faults.py).
            connect_args={"timeout": CONNECT_TIMEOUT},
        )
        self._autocommit = self._engine.execution_options(isolation_level="AUTOCOMMIT")  # the same pool

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(self._engine.begin, fn, args)

    async def run_single(self, fn: Callable[..., T], *args: Any) -> T:
        """A unit whose reads need no lock and whose writes are one statement (a refresh): each statement
        commits itself, which saves the BEGIN and COMMIT round trips. Under READ COMMITTED every statement
        sees a fresh snapshot anyway, so the unit decides on exactly what it would have seen in one."""
        return await self._run(self._autocommit.connect, fn, args)

    async def _run(self, connect: Callable[[], Any], fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            # On expiry the unit is cancelled; SQLAlchemy treats the cancellation as fatal for that
            # connection and terminates it (no rollback round-trip to a server that does not answer).
            async with asyncio.timeout(self._unit_timeout), connect() as conn:
                return await conn.run_sync(fn, *args)  # type: ignore[no-any-return]
        except Exception as exc:
            failure = _unavailable(exc, self._unit_timeout)
            if failure is exc:
                raise
            raise failure from exc

    def stats(self) -> dict[str, int]:
        """For /metrics: connections checked out of the pool, its size and its overflow in use."""
        pool: Any = self._engine.pool
        return {
            "pool_size": pool.size(),
            "pool_checked_out": pool.checkedout(),
            "pool_overflow": max(pool.overflow(), 0),
        }

    async def close(self) -> None:
        await self._engine.dispose()


def _unavailable(exc: Exception, unit_timeout: float) -> Exception:
    """A failure of the store itself as DatabaseUnavailable (a 503); anything else as it was raised."""
    if isinstance(exc, TimeoutError):
        return DatabaseUnavailable(f"database unavailable: no answer within {unit_timeout:g}s")
    if isinstance(exc, PoolTimeout):
        return DatabaseUnavailable("database unavailable: every pooled connection is busy")
    if isinstance(exc, OSError | ConnectionError):
        return DatabaseUnavailable(f"database unavailable: {exc}")
    if isinstance(exc, DBAPIError) and (exc.connection_invalidated or _pg_unavailable(exc)):
        return DatabaseUnavailable(f"database unavailable: {exc.orig}")
    return exc


def _pg_unavailable(exc: DBAPIError) -> bool:
    """Connection lost (08), operator intervention: shutdown, cancel (57), out of disk, memory or connections
    (53), or a read-only server (25006: a hot standby after fail-over, or default_transaction_read_only)."""
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(getattr(exc.orig, "__cause__", None), "sqlstate", "")
    return str(sqlstate).startswith(("08", "57", "53", "25006"))


def open_database(url: str, *, pool_size: int = 20) -> Database:
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return SQLiteDatabase(parsed)
    return PostgresDatabase(parsed, pool_size=pool_size)
