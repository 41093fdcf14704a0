"""`make bench` (scale part): does the server stay as fast with 1,000,000 activations as with 1,000?

For each store it builds two databases that differ only in size. The stores: SQLite; `postgres-tuned`,
a private, durable PostgreSQL cluster the bench starts itself (initdb in a temporary directory, its own
port) with the settings docs/DATA.md recommends for a large installation (POSTGRES_SETTINGS below; fsync,
full-page writes and synchronous commit on); and `postgres`, the PostgreSQL at TESSERA_BENCH_POSTGRES_URL
or TESSERA_TEST_POSTGRES_URL as it is configured (reported, but outside --check: a stock PostgreSQL keeps
128 MB of buffers, a tenth of a million-activation database). The two databases: the same licences (made by the real admin
CLI), holding --small and --activations activations in total (a tenth of them ended; the live ones
with their activation_digests rows and seats_in_use, as the server keeps them). They are filled by
bulk inserts in one transaction (SQLite) or COPY (PostgreSQL), not through HTTP. Then it starts the
real server on each and measures over HTTP, in the same run and configuration (bench/server_bench.py):

  echo        POST /bench/echo: the baseline (same app and middlewares, no work)
  activation  POST /v1/activations, a new host every request, on the filled licences
  refresh     POST /v1/activations/{id}/refresh of randomly chosen filled activations

and prints p50/p99 of each at both sizes and their ratios (the budget: at most +20%). On PostgreSQL
it also runs two server processes against one on the large database (activation throughput ratio).

    .venv/bin/python bench/scale_bench.py [--activations 1000000] [--small 1000] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import Result, build_request, run_load  # noqa: E402
from bench.server_bench import activation_payloads, admin, database, installed_server, server  # noqa: E402
from server.cli.kit import progress_bar  # noqa: E402
from server.db.ids import uuid7  # noqa: E402
from server.domain.hosts import indexed_digests  # noqa: E402
from tests.support.agent import FakeAgent  # noqa: E402

BUDGET = 1.20
Progress = Callable[[int, int], None] | None
# docs/DATA.md, "PostgreSQL settings": buffers that hold the hot tables and indexes, checkpoints spaced by
# time rather than forced by WAL volume, and compressed full-page images.
POSTGRES_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "4GB", "wal_compression": "on"}
CHECKED = ("sqlite", "postgres-tuned")  # the stores --check holds to the budget
SAMPLE = 100_000
ENDED_SHARE = 10  # one activation in ten has ended (no digests, no seat)
COMPONENTS = ("machine-id", "dmi-product-uuid", "mac", "disk-serial")
HOST_MATCH = 3  # the plan's default tolerance: one component may change


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- the filled database ------------------------------------------------------------


def prepare(db: str, keys: Path, licences: int) -> list[dict[str, Any]]:
    """Schema, keys, a product, a plan and the licences, through the real admin CLI."""
    from server.db.migrate import upgrade

    upgrade(db)
    admin(db, keys, "keys", "generate")
    admin(db, keys, "product", "add", "scale-cad", "--name", "Scale CAD")
    admin(db, keys, "plan", "add", "scale", "--kind", "perpetual", "--model", "activation")
    issued = []
    for i in range(licences):
        admin(db, keys, "customer", "add", f"Scale customer {i}")
        issued.append(admin(db, keys, "licence", "issue", "--customer", f"Scale customer {i}", "--product",
                            "scale-cad", "--plan", "scale", "--seats", "1000000"))  # fmt: skip
    return issued


def plan_fill(licences: list[dict[str, Any]], total: int) -> Iterator[tuple[uuid.UUID, list[uuid.UUID]]]:
    """Activation ids per licence, in key order (licences by id, ids ascending): the B-trees are appended to."""
    # Made over the last three years, as the server makes them (UUIDv7): the latest are the largest.
    span_ms, newest_ms = 3 * 365 * 86_400_000, int(time.time() * 1000) - 86_400_000
    ids = sorted(uuid7(newest_ms - span_ms + span_ms * i // max(total, 1)) for i in range(total))
    ordered = sorted(uuid.UUID(lic["id"]) for lic in licences)
    share, extra = divmod(total, len(ordered))
    start = 0
    for i, licence_id in enumerate(ordered):
        count = share + (1 if i < extra else 0)
        yield licence_id, ids[start : start + count]
        start += count


def activation_values(
    activation_id: uuid.UUID, n: int, now: datetime, agent_x: str
) -> tuple[dict[str, Any], list[str]]:
    components = [[kind, b64u(secrets.token_bytes(32))] for kind in COMPONENTS]
    ended = n % ENDED_SHARE == ENDED_SHARE - 1
    row = {
        "id": activation_id,
        "host_components": components,
        "host_match": HOST_MATCH,
        "virtualisation": "none",
        "dongle_serial": None,
        "agent_key": agent_x,
        "hostname": f"filled-{n}",
        "created_at": now - timedelta(days=1),
        "refreshed_at": now - timedelta(hours=1),
        "ended_at": now - timedelta(minutes=30) if ended else None,
        "end_reason": "deactivated" if ended else None,
    }
    return row, [] if ended else indexed_digests(components, HOST_MATCH)


def _other_columns(table: Any, known: set[str]) -> dict[str, Any]:
    """Columns added to the models later: their scalar default, or NULL; a required one stops the bench."""
    values = {}
    for column in table.columns:
        if column.name in known:
            continue
        if column.default is not None and column.default.is_scalar:
            values[column.name] = column.default.arg
        elif column.nullable:
            values[column.name] = None
        else:
            raise SystemExit(f"scale_bench: {table.name}.{column.name} is required and unknown to the filler")
    return values


def fill_sqlite(db: str, licences: list[dict[str, Any]], total: int, agent_x: str,
                progress: Progress = None) -> list[tuple[str, bool]]:  # fmt: skip
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from server.db.models import Activation, ActivationDigest

    dialect = sqlite_dialect.dialect()
    table = Activation.__table__
    columns = [c.name for c in table.columns]
    extra = _other_columns(table, {"licence_id", *activation_values(uuid.uuid4(), 0, datetime.now(UTC), "")[0]})
    processors = {c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in table.columns}
    digest_columns = [c.name for c in ActivationDigest.__table__.columns]
    uuid_hex = processors["id"]
    path = db.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=MEMORY")  # a bench database: one big transaction, then back to WAL
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute("BEGIN")
    insert_activation = f"INSERT INTO activations ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    insert_digest = f"INSERT INTO activation_digests ({', '.join(digest_columns)}) VALUES (?, ?, ?)"
    now = datetime.now(UTC)
    sample: list[tuple[str, bool]] = []  # refresh targets, spread over the whole table
    stride = max(total // SAMPLE, 1) | 1  # odd: the sample mixes live and ended activations
    n = 0
    for licence_id, ids in plan_fill(licences, total):
        rows, digest_rows, live = [], [], 0
        lid = uuid_hex(licence_id) if uuid_hex else str(licence_id)
        for activation_id in ids:
            values, digests = activation_values(activation_id, n, now, agent_x)
            values |= {"licence_id": licence_id, **extra}
            rows.append(tuple(processors[c](values[c]) if processors[c] else values[c] for c in columns))
            aid = uuid_hex(activation_id) if uuid_hex else str(activation_id)
            for d in digests:
                record = {"licence_id": lid, "digest": d, "activation_id": aid}
                digest_rows.append(tuple(record[c] for c in digest_columns))
            live += bool(digests)
            if n % stride == 0:
                sample.append((str(activation_id), bool(digests)))
            n += 1
        conn.executemany(insert_activation, rows)
        digest_rows.sort()
        conn.executemany(insert_digest, digest_rows)
        conn.execute("UPDATE licences SET seats_in_use = seats_in_use + ? WHERE id = ?", (live, lid))
        if progress:
            progress(n, total)
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("ANALYZE")
    conn.close()
    return sample


async def fill_postgres(db: str, licences: list[dict[str, Any]], total: int, agent_x: str,
                        progress: Progress = None) -> list[tuple[str, bool]]:  # fmt: skip
    import asyncpg

    from server.db.models import Activation

    table = Activation.__table__
    columns = [c.name for c in table.columns]
    extra = _other_columns(table, {"licence_id", *activation_values(uuid.uuid4(), 0, datetime.now(UTC), "")[0]})
    conn = await asyncpg.connect(db)
    now = datetime.now(UTC)
    sample: list[tuple[str, bool]] = []  # refresh targets, spread over the whole table
    stride = max(total // SAMPLE, 1) | 1  # odd: the sample mixes live and ended activations
    n = 0
    try:
        async with conn.transaction():
            for licence_id, ids in plan_fill(licences, total):
                rows, digest_rows, live = [], [], 0
                for activation_id in ids:
                    values, digests = activation_values(activation_id, n, now, agent_x)
                    values |= {"licence_id": licence_id, **extra}
                    values["host_components"] = json.dumps(values["host_components"])
                    rows.append(tuple(values[c] for c in columns))
                    digest_rows.extend((licence_id, d, activation_id) for d in digests)
                    live += bool(digests)
                    if n % stride == 0:
                        sample.append((str(activation_id), bool(digests)))
                    n += 1
                await conn.copy_records_to_table("activations", records=rows, columns=columns)
                digest_rows.sort()
                await conn.copy_records_to_table(
                    "activation_digests", records=digest_rows, columns=["licence_id", "digest", "activation_id"]
                )
                await conn.execute(
                    "UPDATE licences SET seats_in_use = seats_in_use + $1 WHERE id = $2", live, licence_id
                )
                if progress:
                    progress(n, total)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return sample


def build(
    backend: str, db: str, keys: Path, licences: int, total: int, agent: FakeAgent
) -> tuple[list[dict[str, Any]], list[tuple[str, bool]], float]:
    issued = prepare(db, keys, licences)
    started = time.perf_counter()
    with progress_bar("activations") as progress:  # at a terminal: a million rows take a while
        if backend == "sqlite":
            sample = fill_sqlite(db, issued, total, agent.public_x, progress)
        else:
            sample = asyncio.run(fill_postgres(db, issued, total, agent.public_x, progress))
    return issued, sample, time.perf_counter() - started


def check_invariants(backend: str, db: str, total: int) -> None:
    """The filled database is one the server could have written: counts agree, seats match live activations."""
    sql = [
        "SELECT count(*) FROM activations",
        "SELECT count(*) FROM activation_digests",
        "SELECT count(*) FROM activations WHERE ended_at IS NULL",
        "SELECT count(*) FROM licences l WHERE seats_in_use <> "
        "(SELECT count(*) FROM activations a WHERE a.licence_id = l.id AND a.ended_at IS NULL)",
    ]
    if backend == "sqlite":
        with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
            found = [conn.execute(q).fetchone()[0] for q in sql]
        conn.close()
    else:
        import asyncpg

        async def read() -> list[int]:
            conn = await asyncpg.connect(db)
            try:
                return [await conn.fetchval(q) for q in sql]
            finally:
                await conn.close()

        found = asyncio.run(read())
    activations, digests, live, wrong = found
    per_seat = len(indexed_digests([[kind, kind] for kind in COMPONENTS], HOST_MATCH))
    assert activations == total and digests == per_seat * live and wrong == 0, found


# -- measuring ------------------------------------------------------------------------


async def measure(port: int, licences: list[dict[str, Any]], sample: list[tuple[str, bool]], agent: FakeAgent,
                  duration: float, concurrency: int, count: int) -> dict[str, Result]:  # fmt: skip
    echo_body = orjson.dumps(FakeAgent().activation_body(licences[0]["key"], licences[0]["product"]))
    echo = [build_request("127.0.0.1", port, "/bench/echo", echo_body)] * 10_000_000
    await run_load("warm-up", "127.0.0.1", port, echo, concurrency=concurrency, duration=min(duration, 1.0))
    results = {"echo": await run_load("echo", "127.0.0.1", port, echo, concurrency=concurrency, duration=duration)}
    # Each database phase is warmed up for a second first (the server's caches, as in a server that
    # has been running): what is compared is the steady state, not the first second after a start.
    warm = min(duration, 1.0)
    payloads, _ = activation_payloads(port, licences, count * 2)
    await run_load("warm-up", "127.0.0.1", port, payloads[count:], concurrency=concurrency, duration=warm)
    results["activation"] = await run_load(
        "activation", "127.0.0.1", port, payloads[:count], concurrency=concurrency, duration=duration
    )
    live = [aid for aid, is_live in sample if is_live]
    rng = random.Random(7)
    chosen = [rng.choice(live) for _ in range(count * 2)]
    refreshes = [
        build_request("127.0.0.1", port, f"/v1/activations/{aid}/refresh", orjson.dumps({"proof": agent.proof(aid)}))
        for aid in chosen
    ]
    await run_load("warm-up", "127.0.0.1", port, refreshes[count:], concurrency=concurrency, duration=warm)
    results["refresh"] = await run_load(
        "refresh", "127.0.0.1", port, refreshes[:count], concurrency=concurrency, duration=duration
    )
    return results


def row(r: Result) -> dict[str, Any]:
    ok = sum(n for s, n in r.statuses.items() if s < 300)
    return {"rps": round(r.rps), "p50_ms": round(r.percentile(0.5), 2), "p99_ms": round(r.percentile(0.99), 2),
            "ok": ok, "errors": r.requests - ok}  # fmt: skip


@contextlib.contextmanager
def postgres_server(backend: str) -> Iterator[str | None]:
    """The admin URL of the PostgreSQL this backend runs on (None for SQLite)."""
    if backend == "sqlite":
        yield None
        return
    if backend == "postgres":
        yield os.environ.get("TESSERA_BENCH_POSTGRES_URL") or os.environ["TESSERA_TEST_POSTGRES_URL"]
        return
    from tests.support.pgcluster import PgCluster, find_bindir

    bindir = find_bindir()
    assert bindir is not None
    cluster = PgCluster(bindir, durable=True)
    try:
        cluster.init()
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in {**POSTGRES_SETTINGS, "max_connections": "100"}.items())
        cluster.start()
        yield cluster.url
    finally:
        cluster.destroy()


@contextlib.contextmanager
def working_copy(backend: str, pristine: str, directory: Path, admin_url: str | None) -> Iterator[str]:
    """A fresh copy of a filled database for one run, so every run starts from the same size."""
    if backend == "sqlite":
        work = directory / "work.db"
        shutil.copyfile(pristine.removeprefix("sqlite:///"), work)
        # On disk before the server starts: otherwise the kernel writes the copy back during the
        # run, and the large database's commits wait behind a gigabyte of someone else's writeback.
        descriptor = os.open(work, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            yield f"sqlite:///{work}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{work}{suffix}").unlink(missing_ok=True)
        return
    assert admin_url is not None
    base, _, name = pristine.rpartition("/")
    clone = f"{name}_run"
    asyncio.run(_pg(admin_url, f'CREATE DATABASE "{clone}" TEMPLATE "{name}" STRATEGY FILE_COPY'))
    asyncio.run(_pg(admin_url, "CHECKPOINT"))  # every run starts with the previous runs' writes on disk
    try:
        yield f"{base}/{clone}"
    finally:
        asyncio.run(_pg(admin_url, f'DROP DATABASE IF EXISTS "{clone}" WITH (FORCE)'))


async def _pg(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def data_operations(backend: str, db: str, directory: Path) -> dict[str, float]:
    """Backup (and for SQLite restore) of the large database: figures for docs/DATA.md."""
    from server.db.backup import backup, restore

    started = time.perf_counter()
    report = backup(db, directory / "large.backup")
    figures = {"backup_s": round(time.perf_counter() - started, 1), "backup_mb": round(report.size / 1e6)}
    if backend == "sqlite":
        started = time.perf_counter()
        restore(Path(report.path), f"sqlite:///{directory / 'restored.db'}")
        figures["restore_s"] = round(time.perf_counter() - started, 1)
        (directory / "restored.db").unlink()
    Path(report.path).unlink()
    return figures


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--activations", type=int, default=1_000_000, help="activations in the large database")
    parser.add_argument("--small", type=int, default=1_000, help="activations in the small database")
    parser.add_argument("--licences", type=int, default=100)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured phase")
    parser.add_argument("--rounds", type=int, default=2, help="small and large measured alternately, medians kept")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backends", default="sqlite,postgres-tuned,postgres")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 when a ratio is over the budget")
    parser.add_argument("--server-venv", type=Path,
                        help="a venv with this checkout installed (pip install '.[server]'); default: built for the run")  # fmt: skip
    args = parser.parse_args()
    import uvloop

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows in a log file

    backends = args.backends.split(",")
    if unknown := set(backends) - {"sqlite", "postgres", "postgres-tuned"}:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    if "postgres" in backends and not (
        os.environ.get("TESSERA_BENCH_POSTGRES_URL") or os.environ.get("TESSERA_TEST_POSTGRES_URL")
    ):
        print("PostgreSQL (as configured) skipped: set TESSERA_BENCH_POSTGRES_URL (or TESSERA_TEST_POSTGRES_URL)")
        backends.remove("postgres")
    if "postgres-tuned" in backends:
        from tests.support.pgcluster import find_bindir

        if find_bindir() is None:
            print("PostgreSQL (tuned, private cluster) skipped: no initdb/pg_ctl found (install postgresql)")
            backends.remove("postgres-tuned")
    print(f"scale bench: {args.small:,} vs {args.activations:,} activations over {args.licences} licences, "
          f"{args.concurrency} connections, {args.duration:g} s per phase, {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    began = time.perf_counter()
    summary: dict[str, Any] = {}
    over: list[str] = []
    count = max(int(args.duration * 4000), 100)
    sizes = (args.small, args.activations)
    venv_dir = tempfile.TemporaryDirectory()
    python = args.server_venv.resolve() / "bin" / "python" if args.server_venv else installed_server(Path(venv_dir.name) / "venv")
    for backend in backends:
        with contextlib.ExitStack() as stack:
            admin_url = stack.enter_context(postgres_server(backend))
            if backend == "postgres-tuned":
                print(
                    f"  postgres-tuned: a private cluster with {', '.join(f'{k}={v}' for k, v in POSTGRES_SETTINGS.items())}"
                )
            built: dict[int, tuple[str, Path, list[dict[str, Any]], list[tuple[str, bool]], FakeAgent]] = {}
            for size in sizes:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                db = stack.enter_context(database(backend, tmp, admin_url))
                agent = FakeAgent(hostname="filled")
                licences, sample, fill_seconds = build(backend, db, tmp / "keys", args.licences, size, agent)
                check_invariants(backend, db, size)
                built[size] = (db, tmp, licences, sample, agent)
                summary[f"{backend}, {size:,}"] = {"fill_s": round(fill_seconds, 1), "runs": []}
                print(f"  {backend}, {size:,} activations: filled in {fill_seconds:.1f} s")
            figures = data_operations(backend, built[args.activations][0], built[args.activations][1])
            summary[f"{backend}, {args.activations:,}"]["data"] = figures
            print(
                f"  {backend}, {args.activations:,} activations: " + ", ".join(f"{k} {v}" for k, v in figures.items())
            )
            for round_no in range(args.rounds):
                order = sizes if round_no % 2 == 0 else sizes[::-1]  # alternate, so drifting load hits both
                for size in order:
                    db, tmp, licences, sample, agent = built[size]
                    for workers in [1, 2] if backend != "sqlite" and size == args.activations else [1]:
                        with working_copy(backend, db, tmp, admin_url) as work, \
                                server(work, tmp / "keys", workers, tmp / "server.log", python=python) as target:  # fmt: skip
                            results = uvloop.run(measure(target.port, licences, sample, agent, args.duration,
                                                         args.concurrency, count))  # fmt: skip
                        key = f"{backend}, {size:,}" + (", 2 processes" if workers == 2 else "")
                        summary.setdefault(key, {"runs": []})["runs"].append({n: row(r) for n, r in results.items()})
                        line = "  ".join(f"{n} {r.rps:5.0f}/s p50 {r.percentile(0.5):6.2f} p99 {r.percentile(0.99):6.2f}"
                                         for n, r in results.items())  # fmt: skip
                        print(f"  round {round_no + 1} {key:<32} {line}")
            for key, entry in summary.items():
                if key.startswith(backend + ",") and entry["runs"]:
                    entry["median"] = {
                        phase: {stat: median([run[phase][stat] for run in entry["runs"]]) for stat in entry["runs"][0][phase]}
                        for phase in entry["runs"][0]
                    }  # fmt: skip
        over += compare(backend, summary, args.small, args.activations)
    print(f"  total {time.perf_counter() - began:.0f} s" + (f"; over budget: {', '.join(over)}" if over else ""))
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2))
    return 1 if args.check and over else 0


def compare(backend: str, summary: dict[str, Any], small_size: int, large_size: int) -> list[str]:
    small = summary[f"{backend}, {small_size:,}"]["median"]
    large = summary[f"{backend}, {large_size:,}"]["median"]
    scope = "" if backend in CHECKED else "; as configured, outside --check"
    print(f"  {backend}: {large_size:,} vs {small_size:,} activations, medians (budget x{BUDGET:.2f}{scope}):")
    over, ratios = [], {}
    for phase in ("echo", "activation", "refresh"):
        for stat in ("p50_ms", "p99_ms"):
            ratio = large[phase][stat] / max(small[phase][stat], 0.001)
            ratios[f"{phase}_{stat}"] = round(ratio, 3)
            verdict = "(baseline: the machine's noise)" if phase == "echo" else ("ok" if ratio <= BUDGET else "OVER")
            if verdict == "OVER" and backend in CHECKED:
                over.append(f"{backend} {phase} {stat[:3]}")
            print(f"    {phase:<11} {stat[:3]}  {small[phase][stat]:7.2f} -> {large[phase][stat]:7.2f} ms  "
                  f"x{ratio:.2f}  {verdict}")  # fmt: skip
    two = summary.get(f"{backend}, {large_size:,}, 2 processes", {}).get("median")
    if two:
        scale = two["activation"]["rps"] / max(large["activation"]["rps"], 1)
        ratios["two_processes_activation_rps"] = round(scale, 3)
        print(f"    two processes vs one ({large_size:,}): activation x{scale:.2f} "
              f"({large['activation']['rps']:.0f} -> {two['activation']['rps']:.0f} req/s), "
              f"refresh x{two['refresh']['rps'] / max(large['refresh']['rps'], 1):.2f}")  # fmt: skip
    summary[f"{backend} ratios"] = ratios
    return over


if __name__ == "__main__":
    sys.exit(main())
