"""What production does to a server: it is killed, its database goes away, hangs, fills up or turns read-only.

Every test here runs the real server process over real HTTP against a database of its own: an SQLite file, or a
private PostgreSQL cluster (tests/support/pgcluster.py), never the shared one, since these tests stop, hang, fill
and break their database. docs/FAULTS.md says what each test proves and what is simulated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from sqlalchemy import text

from tests.conftest import LiveServer, issue_demo_licence
from tests.support.agent import FakeAgent
from tests.support.http import get
from tests.support.pgcluster import PgCluster, private_cluster

pytestmark = pytest.mark.slow

# A request during an outage must be answered (503) within this, never hang: the unit timeout is 10 s
# (server/db/database.py), plus 2 s to close the dead connection and slack for a busy 2-core machine.
ANSWER_WITHIN = 20.0
RECOVER_WITHIN = 30.0
PROBLEM = "application/problem+json"
NOT_READY = {"not-ready", "service-unavailable"}  # /readyz's stable codes for "the database does not answer"


# -- helpers ------------------------------------------------------------------


@dataclass
class Outcome:
    status: int | str  # an HTTP status, or the name of the client-side error
    body: Any
    content_type: str
    started: float
    seconds: float

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None


async def _post(session: aiohttp.ClientSession, url: str, body: dict) -> Outcome:
    started = time.monotonic()
    try:
        async with session.post(url, json=body) as response:
            payload = await response.json(content_type=None)
            return Outcome(response.status, payload, response.content_type, started, time.monotonic() - started)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(type(exc).__name__, None, "", started, time.monotonic() - started)


def _client(total: float = ANSWER_WITHIN + 10) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=total))


def _bodies(licence: dict, count: int, prefix: str) -> list[dict]:
    return [
        FakeAgent(hostname=f"{prefix}-{i}").activation_body(licence["key"], licence["product"]) for i in range(count)
    ]


def _seat_ledger(db_url: str) -> list[tuple[str, int, int, int]]:
    """(licence id, seats, seats_in_use, live activations) for every licence, read with SQL."""
    from server.db.database import open_database

    def unit(conn: Any) -> list[tuple[str, int, int, int]]:
        rows = conn.execute(
            text(
                "SELECT l.id, l.seats, l.seats_in_use,"
                " (SELECT count(*) FROM activations a WHERE a.licence_id = l.id AND a.ended_at IS NULL)"
                " FROM licences l"
            )
        )
        return [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def go() -> list[tuple[str, int, int, int]]:
        db = open_database(db_url, pool_size=1)
        try:
            return await db.run(unit)
        finally:
            await db.close()

    return asyncio.run(go())


def assert_seats_consistent(server: LiveServer, licence: dict, acknowledged: list[str]) -> dict:
    """Every acknowledged activation is live in the database; no licence holds more seats than it has."""
    shown = server.admin("licence", "show", licence["id"])
    live = {a["id"] for a in shown["activations"] if a["ended_at"] is None}
    missing = {str(uuid.UUID(a)) for a in acknowledged} - live
    assert not missing, f"{len(missing)} acknowledged activations are not in the database: {sorted(missing)[:5]}"
    assert shown["seats_in_use"] == len(live) <= shown["seats"], shown
    for licence_id, seats, in_use, live_count in _seat_ledger(server.db_url):
        assert in_use == live_count <= seats, (licence_id, seats, in_use, live_count)
    return shown


def sqlite_path(db_url: str) -> Path:
    return Path(db_url.removeprefix("sqlite:///"))


def sqlite_integrity(db_url: str) -> str:
    with contextlib.closing(sqlite3.connect(sqlite_path(db_url), timeout=10)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def assert_postgres_indexes_intact(cluster: PgCluster, database: str) -> None:
    """amcheck: every B-tree index of our tables agrees with its heap (catches torn or half-written pages)."""
    cluster.execute("CREATE EXTENSION IF NOT EXISTS amcheck", database=database)
    checked = cluster.fetch(
        "SELECT c.relname, bt_index_check(c.oid, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am am ON am.oid = c.relam"
        " WHERE n.nspname = 'public' AND am.amname = 'btree'",
        database=database,
    )
    assert checked, "no index was checked"


def assert_alive(server: LiveServer) -> None:
    assert server.process.process is not None and server.process.process.poll() is None, "the server process died"
    assert get(server.url + "/healthz")[0] == 200


async def _until_served(server: LiveServer, licence: dict, prefix: str) -> tuple[float, list[Outcome]]:
    """Poll with fresh activations until one succeeds; returns how long it took and every answer seen."""
    seen: list[Outcome] = []
    started = time.monotonic()
    async with _client() as session:
        for i in range(10_000):
            body = FakeAgent(hostname=f"{prefix}-{i}").activation_body(licence["key"], licence["product"])
            outcome = await _post(session, server.url + "/v1/activations", body)
            seen.append(outcome)
            if outcome.status == 201:
                return time.monotonic() - started, seen
            assert time.monotonic() - started < RECOVER_WITHIN, (
                f"not serving again after {RECOVER_WITHIN}s: {seen[-3:]}"
            )
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


def assert_unavailable_problems(outcomes: list[Outcome]) -> None:
    """Each answer is a success or a 503 problem document with a stable code, in bounded time; never a 500."""
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {200, 201, 503}, statuses
    for o in outcomes:
        assert o.seconds < ANSWER_WITHIN, f"an answer took {o.seconds:.1f}s"
        if o.status == 503:
            assert o.content_type == PROBLEM and o.code == "service-unavailable", (o.content_type, o.body)
            assert o.body["status"] == 503 and o.body["detail"]


@contextlib.contextmanager
def sized_tmpfs(megabytes: int, owner: tuple[int, int] | None = None) -> Iterator[Path]:
    """A filesystem of a fixed size, so "disk full" is real ENOSPC from the kernel, not a simulation."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a fixed-size tmpfs needs root and mount(8) to make a real full disk")
    where = Path(tempfile.mkdtemp(prefix="tessera-full-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): no real full disk to test against")
    try:
        if owner is not None:
            os.chown(where, *owner)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30, check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


def fill(directory: Path) -> Path:
    """Write a filler file until the kernel refuses even a single byte: the filesystem is full."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


# -- a. the server is killed in the middle of a burst -------------------------


@pytest.fixture(params=["sqlite", "private-postgres"])
def fault_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, PgCluster | None]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tessera.db'}", None
        return
    with private_cluster() as cluster:
        yield cluster.create_database(), cluster


async def _burst_then_kill(server: LiveServer, bodies: list[dict], kill_after: int) -> tuple[list[Outcome], list[str]]:
    """Send the bodies 16 at a time; SIGKILL the server once `kill_after` activations were acknowledged."""
    acknowledged: list[str] = []
    gate = asyncio.Semaphore(16)
    process = server.process.process
    assert process is not None

    async def one(session: aiohttp.ClientSession, body: dict) -> Outcome:
        async with gate:
            outcome = await _post(session, server.url + "/v1/activations", body)
            if outcome.status in (200, 201):
                acknowledged.append(outcome.body["activation_id"])
                if len(acknowledged) == kill_after:
                    process.send_signal(signal.SIGKILL)
            return outcome

    async with _client() as session:
        outcomes = await asyncio.gather(*(one(session, b) for b in bodies))
    return list(outcomes), acknowledged


def test_sigkill_mid_burst_loses_no_acknowledged_activation(
    fault_db: tuple[str, PgCluster | None], tmp_path: Path
) -> None:
    db_url, _ = fault_db
    server = LiveServer(db_url, tmp_path)
    server.start()
    try:
        seats = 60
        licence = issue_demo_licence(server, seats=seats)
        outcomes, acknowledged = asyncio.run(_burst_then_kill(server, _bodies(licence, 150, "burst"), kill_after=25))
        assert server.process.process is not None
        assert server.process.process.wait(timeout=10) == -signal.SIGKILL
        server.process.process = None
        answered = Counter(o.status for o in outcomes if isinstance(o.status, int))
        assert set(answered) <= {201}, answered  # seats were left: nothing but success before the kill
        assert len(acknowledged) >= 25 and len(acknowledged) < 150, "the kill did not land mid-burst"
        assert any(isinstance(o.status, str) for o in outcomes), "no request was cut off by the kill"

        server.start()  # same database, same port: SQLite recovers its WAL, PostgreSQL never noticed
        shown = assert_seats_consistent(server, licence, acknowledged)
        if db_url.startswith("sqlite"):
            assert sqlite_integrity(db_url) == "ok"
        # It serves again, and the seat count still holds: exactly the remaining seats can be taken.
        left = seats - shown["seats_in_use"]
        after = asyncio.run(_gather_activations(server, _bodies(licence, left + 5, "after")))
        assert Counter(o.status for o in after) == {201: left, 409: 5}
        assert {o.code for o in after if o.status == 409} == {"seats-exhausted"}
        final = assert_seats_consistent(server, licence, acknowledged + [o.body["activation_id"] for o in after
                                                                         if o.status == 201])  # fmt: skip
        assert final["seats_in_use"] == seats
    finally:
        server.stop()


async def _gather_activations(server: LiveServer, bodies: list[dict]) -> list[Outcome]:
    gate = asyncio.Semaphore(8)

    async def one(session: aiohttp.ClientSession, body: dict) -> Outcome:
        async with gate:
            return await _post(session, server.url + "/v1/activations", body)

    async with _client() as session:
        return list(await asyncio.gather(*(one(session, b) for b in bodies)))


def test_postgres_crash_mid_burst_loses_no_acknowledged_activation(tmp_path: Path) -> None:
    """PostgreSQL itself dies (immediate shutdown: no checkpoint, WAL replay at restart) under load."""
    with private_cluster(durable=True) as cluster:
        server = LiveServer(cluster.create_database(), tmp_path)
        server.start()
        try:
            licence = issue_demo_licence(server, seats=500)

            async def scenario() -> tuple[list[Outcome], list[str]]:
                acknowledged: list[str] = []
                crashed = asyncio.Event()
                gate = asyncio.Semaphore(12)

                async def one(session: aiohttp.ClientSession, body: dict) -> Outcome:
                    async with gate:
                        outcome = await _post(session, server.url + "/v1/activations", body)
                        if outcome.status == 201:
                            acknowledged.append(outcome.body["activation_id"])
                            if len(acknowledged) == 20:
                                crashed.set()
                        return outcome

                async def crash() -> None:
                    await crashed.wait()
                    await asyncio.to_thread(cluster.stop, "immediate")

                async with _client() as session:
                    crasher = asyncio.create_task(crash())
                    outcomes = await asyncio.gather(*(one(session, b) for b in _bodies(licence, 120, "crash")))
                    await crasher
                return list(outcomes), acknowledged

            outcomes, acknowledged = asyncio.run(scenario())
            assert_unavailable_problems(outcomes)
            assert any(o.status == 503 for o in outcomes), "the crash did not land mid-burst"
            assert_alive(server)
            cluster.start()  # crash recovery replays the WAL
            asyncio.run(_until_served(server, licence, "recovered"))
            assert_seats_consistent(server, licence, acknowledged)
            assert_postgres_indexes_intact(cluster, "tessera")
        finally:
            server.stop()


# -- b. PostgreSQL goes away while requests are running -----------------------


async def _hammer(server: LiveServer, licence: dict, stop: asyncio.Event, outcomes: list[Outcome], tag: str) -> None:
    async with _client() as session:

        async def loop(worker: int) -> None:
            for i in range(100_000):
                if stop.is_set():
                    return
                body = FakeAgent(hostname=f"{tag}-{worker}-{i}").activation_body(licence["key"], licence["product"])
                outcomes.append(await _post(session, server.url + "/v1/activations", body))

        await asyncio.gather(*(loop(w) for w in range(4)))


async def _readyz(session: aiohttp.ClientSession, server: LiveServer) -> Outcome:
    started = time.monotonic()
    async with session.get(server.url + "/readyz") as response:
        payload = await response.json(content_type=None)
        return Outcome(response.status, payload, response.content_type, started, time.monotonic() - started)


def _outage(server: LiveServer, licence: dict, break_db: Any, mend_db: Any, hold: float) -> dict[str, Any]:
    """Hammer the server; break the database, hold, mend it; the server must answer throughout and recover."""

    async def scenario() -> dict[str, Any]:
        outcomes: list[Outcome] = []
        stop = asyncio.Event()
        load = asyncio.create_task(_hammer(server, licence, stop, outcomes, "load"))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(break_db)
        broken_at = time.monotonic()
        await asyncio.sleep(hold)
        async with _client() as session:
            ready = await _readyz(session, server)
        mended_at = time.monotonic()
        await asyncio.to_thread(mend_db)
        recovered_after, polls = await _until_served(server, licence, "mended")
        stop.set()
        await load
        return {
            "outcomes": outcomes + polls,
            "during": [o for o in outcomes if broken_at + 1 < o.started < mended_at],
            "readyz": ready,
            "recovered_after": recovered_after,
        }

    return asyncio.run(scenario())


def test_postgres_stopped_under_load_gives_503_and_recovers_without_a_restart(tmp_path: Path) -> None:
    with private_cluster() as cluster:
        server = LiveServer(cluster.create_database(), tmp_path)
        server.start()
        try:
            licence = issue_demo_licence(server, seats=10_000)
            pid = server.process.process.pid if server.process.process else None
            seen = _outage(server, licence, cluster.stop, cluster.start, hold=3.0)
            assert_unavailable_problems(seen["outcomes"])
            during = seen["during"]
            assert during and {o.status for o in during} == {503}, Counter(o.status for o in during)
            ready = seen["readyz"]
            assert ready.status == 503 and ready.content_type == PROBLEM and ready.code in NOT_READY
            assert seen["recovered_after"] < RECOVER_WITHIN
            assert_alive(server)
            assert server.process.process is not None and server.process.process.pid == pid  # never restarted
            # Recovered for good: the pool holds no dead connection that fails a later request.
            after = asyncio.run(_gather_activations(server, _bodies(licence, 30, "after")))
            assert Counter(o.status for o in after) == {201: 30}
            assert get(server.url + "/readyz")[0] == 200
            acknowledged = [o.body["activation_id"] for o in seen["outcomes"] + after if o.status == 201]
            assert_seats_consistent(server, licence, acknowledged)
        finally:
            server.stop()


def _cluster_processes(cluster: PgCluster) -> list[psutil.Process]:
    postmaster = psutil.Process(int((cluster.data / "postmaster.pid").read_text().split()[0]))
    return [postmaster, *postmaster.children(recursive=True)]


def test_hung_postgres_gives_503_in_bounded_time_and_recovers(tmp_path: Path) -> None:
    """The database host stops answering (SIGSTOP: a frozen VM, a black-holed network), it does not refuse."""
    with private_cluster() as cluster:
        server = LiveServer(cluster.create_database(), tmp_path)
        server.start()
        try:
            licence = issue_demo_licence(server, seats=10_000)
            frozen: list[psutil.Process] = []

            def freeze() -> None:
                frozen.extend(_cluster_processes(cluster))
                for process in frozen:
                    process.suspend()

            def thaw() -> None:
                for process in frozen:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.resume()

            try:
                seen = _outage(server, licence, freeze, thaw, hold=14.0)
            finally:
                thaw()
            assert_unavailable_problems(seen["outcomes"])
            assert any(o.status == 503 for o in seen["during"]), Counter(o.status for o in seen["during"])
            assert seen["readyz"].status == 503 and seen["readyz"].code in NOT_READY
            assert_alive(server)
            after = asyncio.run(_gather_activations(server, _bodies(licence, 20, "after")))
            assert Counter(o.status for o in after) == {201: 20}
            acknowledged = [o.body["activation_id"] for o in seen["outcomes"] + after if o.status == 201]
            assert_seats_consistent(server, licence, acknowledged)
        finally:
            server.stop()


# -- c. a full disk, a read-only database -------------------------------------


def _write_fault(
    server: LiveServer, licence: dict, prefix: str, break_store: Any, mend_store: Any, *, all_refused: bool = True
) -> tuple[list[Outcome], list[str]]:
    """Activate some seats; break the store; writes must be 503 problems; mend it; it must serve again.

    On a full disk a write that fits in space already allocated (free room in a page, a recycled WAL) still
    succeeds, as it should: there `all_refused` is False and each answer must be a 201 that holds, or a 503.
    """
    before = asyncio.run(_gather_activations(server, _bodies(licence, 5, f"{prefix}-before")))
    assert Counter(o.status for o in before) == {201: 5}
    break_store()
    try:
        during = asyncio.run(_gather_activations(server, _bodies(licence, 30, f"{prefix}-during")))
        assert_unavailable_problems(during)
        statuses = Counter(o.status for o in during)
        assert (statuses[503] == 30) if all_refused else (statuses[503] > 0), statuses
        assert_alive(server)
    finally:
        mend_store()
    _, polls = asyncio.run(_until_served(server, licence, f"{prefix}-after"))
    after = asyncio.run(_gather_activations(server, _bodies(licence, 5, f"{prefix}-after-more")))
    assert Counter(o.status for o in after) == {201: 5}
    outcomes = before + during + polls + after
    return outcomes, [o.body["activation_id"] for o in outcomes if o.status == 201]


def test_sqlite_on_a_full_disk_gives_503_without_corruption_and_recovers(tmp_path: Path) -> None:
    """A real ENOSPC: the database lives on an 8 MiB tmpfs that a filler file then fills to the last block."""
    with sized_tmpfs(8) as disk:
        db_url = f"sqlite:///{disk / 'tessera.db'}"
        server = LiveServer(db_url, tmp_path)
        server.start()
        try:
            licence = issue_demo_licence(server, seats=1000)
            filler: list[Path] = []
            outcomes, acknowledged = _write_fault(
                server,
                licence,
                "full",
                lambda: filler.append(fill(disk)),
                lambda: [f.unlink() for f in filler],
                all_refused=False,
            )
            assert any(o.status == 503 for o in outcomes)
            assert_seats_consistent(server, licence, acknowledged)
        finally:
            server.stop()
        assert sqlite_integrity(db_url) == "ok"


def test_sqlite_file_made_unwritable_gives_503_without_corruption_and_recovers(tmp_path: Path) -> None:
    """The database and its WAL turn immutable under the running server (chattr +i: root cannot write either).

    Root ignores file modes, so chmod would prove nothing here. The -shm index stays writable on purpose:
    SQLite maps it into memory, and a write to a mapping of an immutable file is SIGBUS (see docs/FAULTS.md).
    """
    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed: cannot make the database file immutable")
    db_url = f"sqlite:///{tmp_path / 'db' / 'tessera.db'}"
    (tmp_path / "db").mkdir()
    server = LiveServer(db_url, tmp_path)
    server.start()
    path = sqlite_path(db_url)
    files = [str(path), str(path) + "-wal"]
    try:
        licence = issue_demo_licence(server, seats=1000)

        def freeze() -> None:
            done = subprocess.run(["chattr", "+i", *files], capture_output=True, text=True, timeout=30, check=False)
            if done.returncode != 0:
                pytest.skip(f"this filesystem has no immutable flag ({done.stderr.strip()})")

        def thaw() -> None:
            subprocess.run(["chattr", "-i", *files], capture_output=True, timeout=30, check=False)

        try:
            _, acknowledged = _write_fault(server, licence, "ro", freeze, thaw)
        finally:
            thaw()
        assert_seats_consistent(server, licence, acknowledged)
    finally:
        server.stop()
        subprocess.run(["chattr", "-i", *files], capture_output=True, timeout=30, check=False)
    assert sqlite_integrity(db_url) == "ok"


def test_postgres_turned_read_only_gives_503_and_recovers(tmp_path: Path) -> None:
    """The cluster is switched to read-only under the running server, as after a fail-over to a standby."""
    with private_cluster() as cluster:
        server = LiveServer(cluster.create_database(), tmp_path)
        server.start()
        try:
            licence = issue_demo_licence(server, seats=1000)

            def read_only() -> None:
                # Reloaded into every open session too, so pooled connections turn read-only as well.
                cluster.execute("ALTER SYSTEM SET default_transaction_read_only = on")
                cluster.execute("SELECT pg_reload_conf()")

            def writable() -> None:
                cluster.execute(
                    "SET default_transaction_read_only = off",
                    "ALTER SYSTEM RESET default_transaction_read_only",
                    "SELECT pg_reload_conf()",
                )

            _, acknowledged = _write_fault(server, licence, "ro", read_only, writable)
            assert_seats_consistent(server, licence, acknowledged)
            assert_postgres_indexes_intact(cluster, "tessera")
        finally:
            server.stop()


def test_postgres_tablespace_on_a_full_disk_gives_503_and_recovers(tmp_path: Path) -> None:
    """Real ENOSPC inside PostgreSQL: the activation tables live in a tablespace on a full 8 MiB tmpfs."""
    with private_cluster() as cluster:
        owner = (os.stat(cluster.data).st_uid, os.stat(cluster.data).st_gid)
        with sized_tmpfs(8, owner=owner) as disk:
            database = "tessera"
            server = LiveServer(cluster.create_database(database), tmp_path)
            cluster.execute(f"CREATE TABLESPACE small LOCATION '{disk}'")
            for table in ("activations", "activation_digests"):
                cluster.execute(f"ALTER TABLE {table} SET TABLESPACE small", database=database)
            server.start()
            try:
                licence = issue_demo_licence(server, seats=1000)
                filler: list[Path] = []
                _, acknowledged = _write_fault(
                    server,
                    licence,
                    "full",
                    lambda: filler.append(fill(disk)),
                    lambda: [f.unlink() for f in filler],
                    all_refused=False,
                )
                assert_seats_consistent(server, licence, acknowledged)
                assert_postgres_indexes_intact(cluster, database)
            finally:
                server.stop()
                cluster.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                cluster.execute("DROP TABLESPACE IF EXISTS small")
