"""Online backup and restore of an installation's database.

SQLite: sqlite3's backup API copies the pages inside one read transaction,
held on the source connection across the backup's steps: in WAL mode the
server keeps writing meanwhile and the copy is the database as it was at one
instant (the steps only report progress). The copy is made in a temporary file
beside the destination (mode 0600), switched out of WAL mode so it is one
self-contained file, checked with ``PRAGMA integrity_check``, fsynced and only
then renamed into place; the directory is fsynced too.

PostgreSQL: ``pg_dump -Fc`` when it is on PATH, under a snapshot exported from
a repeatable-read transaction in which the row counts are read, so the counts
reported are the counts in the dump; its progress is reported table by table,
in rows, from pg_dump's --verbose lines. Restoring a PostgreSQL dump is
``pg_restore``'s job (docs/DATA.md).

Every refusal is a :class:`DataError` with a stable code, raised before
anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from server.db.database import normalise_url

SQLITE_MAGIC = b"SQLite format 3\x00"
VERSION_TABLE = "alembic_version"
STEP_PAGES = 256  # pages an SQLite backup step copies between two progress reports (1 MiB of 4 KiB pages)

Progress = Callable[[int, int], None]  # (done so far, in all): bytes for SQLite, rows for PostgreSQL


class DataError(Exception):
    """A refused or failed backup, restore or migration; ``code`` is a public contract."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class BackupReport:
    path: str
    backend: str
    format: str
    size: int
    revision: str | None
    rows: dict[str, int]
    taken_at: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RestoreReport:
    path: str
    source: str
    size: int
    revision: str | None
    head: str | None
    rows: dict[str, int]
    replaced: bool
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- shared helpers ------------------------------------------------------------


def sqlite_file(url: str) -> Path | None:
    """The file behind an SQLite URL, or None for a PostgreSQL URL."""
    try:
        parsed = normalise_url(url)
    except ValueError as exc:
        raise DataError("database-url-invalid", str(exc)) from exc
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise DataError("database-url-invalid", f"{url}: an in-memory SQLite database has nothing to back up")
    return Path(parsed.database)


def known_revisions() -> tuple[set[str], str | None]:
    """Every revision our migrations know, and the head."""
    from alembic.script import ScriptDirectory

    from server.db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite:///unused.db"))
    return {rev.revision for rev in script.walk_revisions()}, script.get_current_head()


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_sqlite_file(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def _sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    return [str(r[0]) for r in rows]


def _sqlite_revision(conn: sqlite3.Connection) -> str | None:
    if VERSION_TABLE not in _sqlite_tables(conn):
        return None
    row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()  # noqa: S608 - a constant
    return None if row is None else str(row[0])


def _sqlite_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        name: int(conn.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0])  # noqa: S608 - quoted name
        for name in _sqlite_tables(conn)
        if name != VERSION_TABLE
    }


def _integrity(conn: sqlite3.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]


def _temp_beside(target: Path) -> Path:
    """An empty, new, owner-only file in the target's directory (so the final rename is atomic)."""
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    return temp


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _removed_on_failure(path: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(str(path) + suffix).unlink()
        raise


def _publish(temp: Path, target: Path) -> None:
    _fsync_file(temp)
    os.replace(temp, target)
    _fsync_dir(target.parent)


def _output_path(out: Path, *, force: bool, suffix: str) -> Path:
    """A directory gets a timestamped file in it (for scheduled backups); an existing file needs --force."""
    if out.is_dir():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = out / f"tessera-{stamp}{suffix}"
    if out.exists() and not force:
        raise DataError("backup-exists", f"{out} exists: choose another name, or --force to replace it")
    if not out.parent.is_dir():
        raise DataError("backup-out-invalid", f"{out.parent} is not a directory")
    return out


def open_sqlite(path: Path, *, mode: str, code_prefix: str, schema_code: str) -> sqlite3.Connection:
    """Open an existing SQLite file (never create one) and check it is ours, or refuse with a code."""
    if not path.is_file():
        raise DataError(f"{code_prefix}-source-missing", f"{path} does not exist (or is not a file)")
    try:
        if not _is_sqlite_file(path):
            raise DataError(f"{code_prefix}-not-sqlite", f"{path} is not an SQLite database")
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True, timeout=30, isolation_level=None)
    except OSError as exc:
        raise DataError(f"{code_prefix}-failed", f"cannot read {path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise DataError(f"{code_prefix}-not-sqlite", f"{path} is not a usable SQLite database: {exc}") from exc
    try:
        revision = _sqlite_revision(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        kind = "corrupt" if "malformed" in str(exc) else "not-sqlite"
        raise DataError(f"{code_prefix}-{kind}", f"{path} is not a usable SQLite database: {exc}") from exc
    if revision is None:
        conn.close()
        raise DataError(schema_code, f"{path} holds no Tessera schema (no {VERSION_TABLE} table)")
    return conn


def _copy_pages(source: sqlite3.Connection, temp: Path, progress: Progress | None = None) -> sqlite3.Connection:
    """Copy the source into temp, STEP_PAGES pages a step, all inside one read transaction opened on the source
    first: each step reads that transaction's snapshot (the backup API opens and ends a transaction of its own
    per step only when none is open), so the copy is consistent and writers elsewhere never restart it."""
    copy = sqlite3.connect(temp, isolation_level=None)
    try:
        page_size = int(source.execute("PRAGMA page_size").fetchone()[0])
        source.execute("BEGIN")
        try:
            source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot is taken here

            def report(_status: int, remaining: int, total: int) -> None:
                if progress is not None:
                    progress((total - remaining) * page_size, total * page_size)

            source.backup(copy, pages=STEP_PAGES, progress=None if progress is None else report)
        finally:
            source.execute("ROLLBACK")
        # The pages carry the source's WAL flag: make the copy one self-contained file.
        copy.execute("PRAGMA journal_mode=DELETE")
    except BaseException:
        copy.close()
        raise
    return copy


# -- backup --------------------------------------------------------------------


def backup(url: str, out: Path, *, force: bool = False, progress: Progress | None = None) -> BackupReport:
    path = sqlite_file(url)
    if path is None:
        return backup_postgres(url, out, force=force, progress=progress)
    return backup_sqlite(path, out, force=force, progress=progress)


def backup_sqlite(path: Path, out: Path, *, force: bool = False, progress: Progress | None = None) -> BackupReport:
    started = datetime.now(UTC)
    source = open_sqlite(path, mode="rw", code_prefix="backup", schema_code="backup-schema-missing")
    try:
        out = _output_path(out, force=force, suffix=".db")
        if out.resolve() == path.resolve():
            raise DataError("backup-out-invalid", "the backup cannot replace the database it copies")
        temp = _temp_beside(out)
        with _removed_on_failure(temp):
            try:
                copy = _copy_pages(source, temp, progress)
            except sqlite3.Error as exc:
                raise DataError("backup-failed", f"copying {path} failed: {exc}") from exc
            try:
                problems = _integrity(copy)
                if problems != ["ok"]:
                    raise DataError("backup-corrupt", f"the copy fails PRAGMA integrity_check: {problems[:5]}")
                revision = _sqlite_revision(copy)
                rows = _sqlite_counts(copy)
            finally:
                copy.close()
            _publish(temp, out)
    except OSError as exc:
        raise DataError("backup-failed", f"writing {out}: {exc}") from exc
    finally:
        source.close()
    return BackupReport(
        path=str(out),
        backend="sqlite",
        format="sqlite",
        size=out.stat().st_size,
        revision=revision,
        rows=rows,
        taken_at=started.isoformat(),
        seconds=round((datetime.now(UTC) - started).total_seconds(), 3),
    )


def _libpq_env(url: URL) -> dict[str, str]:
    """Connection settings for pg_dump in its environment, so a password never shows in `ps`."""
    env = {"PGDATABASE": url.database or "", "PGHOST": url.host or "", "PGUSER": url.username or ""}
    if url.port:
        env["PGPORT"] = str(url.port)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    for key, value in url.query.items():
        if key in ("sslmode", "sslrootcert", "sslcert", "sslkey") and isinstance(value, str):
            env["PG" + key.upper()] = value
    return {k: v for k, v in env.items() if v}


def backup_postgres(url: str, out: Path, *, force: bool = False, progress: Progress | None = None) -> BackupReport:
    pg_dump = shutil.which("pg_dump")
    pg_restore = shutil.which("pg_restore")
    if pg_dump is None or pg_restore is None:
        raise DataError(
            "backup-pg-dump-missing",
            "PostgreSQL is backed up with its own tools and they are not on PATH: install the PostgreSQL client "
            "(pg_dump, pg_restore) of the server's major version, or run `pg_dump -Fc` yourself, or use base "
            "backups with WAL archiving for point-in-time recovery (docs/DATA.md)",
        )
    out = _output_path(out, force=force, suffix=".dump")
    report = asyncio.run(_backup_postgres(normalise_url(url), out, pg_dump, pg_restore, progress))
    return replace(report, size=out.stat().st_size)


async def _backup_postgres(
    url: URL, out: Path, pg_dump: str, pg_restore: str, progress: Progress | None = None
) -> BackupReport:
    import asyncpg

    started = datetime.now(UTC)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DataError("backup-source-unavailable", f"cannot connect to {url.render_as_string()}: {exc}") from exc
    try:
        # The dump and the counts read one snapshot: the counts are those of the dump.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            tables = [
                r["table_name"]
                for r in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
                )
            ]
            if VERSION_TABLE not in tables:
                raise DataError("backup-schema-missing", f"{url.render_as_string()} holds no Tessera schema")
            revision = await conn.fetchval(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608 - a constant
            rows = {
                t: int(await conn.fetchval(f"SELECT count(*) FROM {quote(t)}"))  # noqa: S608 - quoted name
                for t in tables
                if t != VERSION_TABLE
            }
            temp = _temp_beside(out)
            with _removed_on_failure(temp):
                env = os.environ | _libpq_env(url)
                dump = [pg_dump, "-Fc", f"--snapshot={snapshot}", f"--file={temp}"]
                if progress is None:
                    await _run(dump, env, "backup-failed")
                else:
                    tables = _TableProgress(rows, progress)
                    # --verbose names each table as its data is dumped, in messages that LC_ALL=C keeps English.
                    await _run([*dump, "--verbose"], env | {"LC_ALL": "C"}, "backup-failed", tables.line)
                    tables.finish()
                await _run([pg_restore, "--list", str(temp)], env, "backup-corrupt")
                _publish(temp, out)
    finally:
        await conn.close()
    return BackupReport(
        path=str(out),
        backend="postgresql",
        format="pg_dump-custom",
        size=0,
        revision=revision,
        rows=rows,
        taken_at=started.isoformat(),
        seconds=round((datetime.now(UTC) - started).total_seconds(), 3),
    )


class _TableProgress:
    """pg_dump's progress in rows: a table's rows count as done when the next table's data starts, all at the end."""

    STARTED = 'dumping contents of table "'

    def __init__(self, rows: dict[str, int], progress: Progress) -> None:
        self.rows, self.progress = rows, progress
        self.total = sum(rows.values())
        self.done = 0
        self.current: str | None = None
        progress(0, self.total)

    def line(self, line: str) -> bool:
        """Follow one line of pg_dump's stderr; True for its --verbose information, which no error needs."""
        program, _, message = line.partition(": ")
        if program != "pg_dump" or message.startswith(("error:", "warning:", "detail:", "hint:", "fatal:")):
            return False
        if message.startswith(self.STARTED):
            self._table_done()
            self.current = message.removeprefix(self.STARTED).rstrip('"').rpartition(".")[2]
        return True

    def finish(self) -> None:
        self._table_done()
        self.progress(self.total, self.total)

    def _table_done(self) -> None:
        if self.current is not None:
            self.done = min(self.total, self.done + self.rows.get(self.current, 0))
            self.progress(self.done, self.total)
        self.current = None


async def _run(
    argv: list[str], env: dict[str, str], code: str, information: Callable[[str], bool] | None = None
) -> None:
    """Run a PostgreSQL tool; its stderr is the detail of a failure, less the lines `information` takes."""
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    kept: list[str] = []
    async for raw in process.stderr:
        line = raw.decode(errors="replace").rstrip("\n")
        if information is None or not information(line):
            kept.append(line)
    await process.wait()
    if process.returncode != 0:
        detail = "\n".join(kept).strip()[-2000:]
        raise DataError(code, f"{Path(argv[0]).name} failed: {detail}")


# -- restore -------------------------------------------------------------------


def restore(source: Path, url: str, *, force: bool = False, progress: Progress | None = None) -> RestoreReport:
    target = sqlite_file(url)
    if target is None:
        raise DataError(
            "restore-unsupported",
            "restore writes SQLite databases; restore a PostgreSQL dump with "
            "`pg_restore --clean --if-exists --no-owner -d DBNAME FILE` (docs/DATA.md)",
        )
    return restore_sqlite(source, target, force=force, progress=progress)


def restore_sqlite(
    source: Path, target: Path, *, force: bool = False, progress: Progress | None = None
) -> RestoreReport:
    backup_conn = open_sqlite(source, mode="ro", code_prefix="restore", schema_code="restore-wrong-schema")
    try:
        problems = _integrity(backup_conn)
        if problems != ["ok"]:
            raise DataError("restore-corrupt", f"{source} fails PRAGMA integrity_check: {problems[:5]}")
        revision = _sqlite_revision(backup_conn)
        revisions, head = known_revisions()
        if revision not in revisions:
            raise DataError(
                "restore-wrong-schema",
                f"{source} is at schema revision {revision!r}, which this version of Tessera does not know",
            )
        if revision == head:
            _check_tables(backup_conn, source)
        if target.exists() and target.resolve() == source.resolve():
            raise DataError("restore-target-exists", "the backup and the target are the same file")
        target.parent.mkdir(parents=True, exist_ok=True)
        with _target_lock(target) as held:
            if held is not None and not force:
                holding = _holds_data(held)
                if holding:
                    raise DataError(
                        "restore-target-exists",
                        f"{target} already holds data ({holding}): pass --force to replace it",
                    )
            temp = _temp_beside(target)
            with _removed_on_failure(temp):
                copy = _copy_pages(backup_conn, temp, progress)
                try:
                    problems = _integrity(copy)
                    if problems != ["ok"]:
                        raise DataError("restore-corrupt", f"the restored copy fails integrity_check: {problems[:5]}")
                    rows = _sqlite_counts(copy)
                finally:
                    copy.close()
                replaced = target.exists()
                if replaced:
                    _take_ownership(temp, target)
                _publish(temp, target)
                # The old file's journal or WAL must never be replayed onto the restored one.
                for suffix in ("-journal", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        Path(str(target) + suffix).unlink()
    except OSError as exc:
        raise DataError("restore-failed", f"restoring into {target}: {exc}") from exc
    except sqlite3.Error as exc:
        raise DataError("restore-failed", f"restoring into {target}: {exc}") from exc
    finally:
        backup_conn.close()
    notes = [] if revision == head else [f"schema {revision} is older than {head}: run `tessera-server migrate`"]
    return RestoreReport(
        path=str(target),
        source=str(source),
        size=target.stat().st_size,
        revision=revision,
        head=head,
        rows=rows,
        replaced=replaced,
        notes=notes,
    )


def _take_ownership(temp: Path, target: Path) -> None:
    """The restored file keeps the replaced file's owner and mode, so the service user can still open it."""
    status = target.stat()
    with contextlib.suppress(PermissionError):
        os.chown(temp, status.st_uid, status.st_gid)
    os.chmod(temp, status.st_mode & 0o777)


def _check_tables(conn: sqlite3.Connection, source: Path) -> None:
    from server.db.models import Base

    missing = sorted(set(Base.metadata.tables) - set(_sqlite_tables(conn)))
    if missing:
        raise DataError("restore-wrong-schema", f"{source} lacks the tables {', '.join(missing)}")


class _NotSqlite:
    """Stands for an existing target that is not an SQLite database."""


@contextlib.contextmanager
def _target_lock(target: Path) -> Iterator[sqlite3.Connection | _NotSqlite | None]:
    """Hold an exclusive lock on the existing target while it is replaced; refuse it if a server holds it.

    A server keeps its SQLite file open (in WAL mode every open connection holds a shared lock), so an
    exclusive lock that cannot be had at once means someone is using it. Yields None when there is no target,
    and for a file that is not an SQLite database (replaced only with --force, checked by the caller).
    """
    if not target.exists():
        yield None
        return
    if target.stat().st_size and not _is_sqlite_file(target):
        yield _NotSqlite()
        return
    conn = sqlite3.connect(f"{target.absolute().as_uri()}?mode=rw", uri=True, timeout=0, isolation_level=None)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise DataError(
                "restore-target-in-use",
                f"{target} is in use (a running server?): stop the server before restoring",
            ) from exc
        raise DataError("restore-failed", f"cannot lock {target}: {exc}") from exc
    try:
        yield conn
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        conn.close()


def _holds_data(conn: sqlite3.Connection | _NotSqlite) -> str:
    """'' when the target may be overwritten without --force (empty, or a schema without rows)."""
    if isinstance(conn, _NotSqlite):
        return "it is not an SQLite database"
    counts = {name: n for name, n in _sqlite_counts(conn).items() if n}
    return ", ".join(f"{name}: {n} rows" for name, n in sorted(counts.items()))
