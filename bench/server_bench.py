"""`make bench` (server part): activation and refresh against the real server, beside a bare aiohttp echo.

For each store (SQLite; PostgreSQL when TESSERA_BENCH_POSTGRES_URL or TESSERA_TEST_POSTGRES_URL is
set) and for one and two server processes, it starts the real server with the bench echo route and,
in its own processes, a bare aiohttp echo on the same event loop (uvloop), then measures in rounds
that interleave the phases (default three; the medians are printed):

  bare        POST /bench/echo on aiohttp alone (no middleware): the baseline
  echo        POST /bench/echo on Tessera (same app, same middlewares, no work)
  activation  POST /v1/activations, a new host every request (every request writes and signs); its CPU is
              counted until the notification worker has fanned out the events the activations emitted
  refresh     POST /v1/activations/{id}/refresh with a fresh signed proof

For each: throughput, p50/p99 latency, the server processes' CPU per request (from /proc: user plus
system time of the server and its workers), on PostgreSQL the database's own CPU per request (every
`postgres` process of the machine), the load generator's own CPU per request (so a reader can see it
was not the bottleneck), and throughput and CPU as shares of the bare echo.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import Result, build_request, run_load  # noqa: E402
from tests.support.agent import FakeAgent  # noqa: E402

PASSPHRASE = "bench-" + secrets.token_hex(4)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def admin(db: str, keys: Path, *args: str) -> Any:
    from server.cli.admin import main

    os.environ["TESSERA_KEY_PASSPHRASE"] = PASSPHRASE
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--db", db, "--keys-dir", str(keys), "--json", *args])
    if code:
        raise SystemExit(f"tessera-admin {' '.join(args)} failed")
    return json.loads(out.getvalue())


@contextlib.contextmanager
def database(backend: str, directory: Path, postgres_url: str | None = None) -> Iterator[str]:
    """A new database for one bench: an SQLite file, or a database on the PostgreSQL at `postgres_url`
    (default: TESSERA_BENCH_POSTGRES_URL or TESSERA_TEST_POSTGRES_URL)."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'bench.db'}"
        return
    import asyncpg

    base_url = postgres_url or os.environ.get("TESSERA_BENCH_POSTGRES_URL") or os.environ["TESSERA_TEST_POSTGRES_URL"]
    name = "tessera_bench_" + secrets.token_hex(4)

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(base_url)
        await conn.execute(sql)
        await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield base_url.rpartition("/")[0] + "/" + name
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Server:
    port: int
    processes: list[psutil.Process]  # the server and its workers: whose CPU is counted

    def cpu_seconds(self) -> float:
        return sum(_cpu(p) for p in self.processes)


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


_SHARED = ("checkpointer", "background writer", "walwriter", "autovacuum launcher", "logical replication launcher")


def postgres_cpu(database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL process working for the bench: the backends (and autovacuum workers) of
    its database, and the cluster's shared writers; other databases' backends (other work on the same
    cluster) are left out."""
    out = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        title = " ".join(process.info["cmdline"] or ())
        if process.info["name"] == "postgres" and (f" {database} " in f"{title} " or title.endswith(_SHARED)):
            out[process.pid] = _cpu(process)
    return out


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """A process that exited took its time with it; one that started counts whole."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def installed_server(where: Path) -> Path:
    """A venv with this checkout installed as an operator installs it (`pip install '.[server]'`, not editable):
    its Python, which runs the server from outside the checkout."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    subprocess.run([str(where / "bin" / "pip"), "install", "--quiet", f"{ROOT}[server]"], check=True)
    return where / "bin" / "python"


@contextlib.contextmanager
def server(db: str, keys: Path, workers: int, log: Path, *, python: Path, bare: bool = False) -> Iterator[Server]:
    """The real server from `python`'s installed package (`bare`: aiohttp's bare echo instead), `workers`
    processes sharing one port."""
    port = free_port()
    env = os.environ | {"TESSERA_KEY_PASSPHRASE": PASSPHRASE, "TESSERA_BENCH_ECHO": "1"}
    if bare:
        argv = [sys.executable, str(Path(__file__).resolve()), "--bare-echo", str(port), "--workers", str(workers)]
        ready = f"http://127.0.0.1:{port}/healthz"
    else:
        argv = [str(python), "-m", "server.cli", "serve", "--db", db, "--keys-dir", str(keys), "--port", str(port),
                "--workers", str(workers)]  # fmt: skip
        ready = f"http://127.0.0.1:{port}/readyz"
    with log.open("ab") as handle:
        # Not from the checkout: the installed package is what runs.
        process = subprocess.Popen(argv, cwd=log.parent, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(ready, timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.05)
        if workers > 1:
            time.sleep(1.0)  # every worker has bound the port (readiness only proves one)
        parent = psutil.Process(process.pid)
        yield Server(port, [parent, *parent.children(recursive=True)])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def bare_echo(port: int, workers: int) -> None:
    """aiohttp alone, the same event loop as the server (uvloop), no middleware: what a request costs at least."""
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=b"{}", content_type="application/json")

    children = [subprocess.Popen([sys.executable, __file__, "--bare-echo", str(port), "--workers", "1"])
                for _ in range(workers - 1)]  # fmt: skip
    app = web.Application()
    app.router.add_post("/bench/echo", echo)
    app.router.add_get("/healthz", healthz)
    import uvloop

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    try:
        web.run_app(app, sock=sock, print=None, access_log=None, loop=uvloop.new_event_loop())
    finally:
        for child in children:
            child.terminate()
            child.wait()


def activation_payloads(port: int, licences: list[dict[str, Any]], count: int) -> tuple[list[bytes], list[FakeAgent]]:
    agents = [FakeAgent(hostname=f"bench-{i}") for i in range(count)]
    payloads = [
        build_request("127.0.0.1", port, "/v1/activations",
                      orjson.dumps(agent.activation_body(licences[i % len(licences)]["key"], licences[i % len(licences)]["product"])))
        for i, agent in enumerate(agents)
    ]  # fmt: skip
    return payloads, agents


@dataclass
class Phase:
    result: Result
    server_cpu: float  # seconds, over the phase
    postgres_cpu: float | None

    @property
    def server_us(self) -> float:
        return self.server_cpu / max(self.result.requests, 1) * 1e6

    @property
    def postgres_us(self) -> float | None:
        return None if self.postgres_cpu is None else self.postgres_cpu / max(self.result.requests, 1) * 1e6

    @property
    def loadgen_us(self) -> float:
        return self.result.loadgen_cpu / max(self.result.requests, 1) * 1e6


async def outbox_drained(db: str, within: float = 120.0) -> None:
    """Waits until the server has fanned out every event it emitted: each activation emits one, and choosing
    its recipients is work the activation caused, counted in its CPU rather than in the next phase's."""
    query = "SELECT count(*) FROM outbox_events WHERE fanned_out_at IS NULL"
    polls = int(within / 0.05)
    if db.startswith("sqlite"):
        import sqlite3

        def pending() -> int:
            with contextlib.closing(sqlite3.connect(db.removeprefix("sqlite:///"), timeout=30)) as conn:
                return int(conn.execute(query).fetchone()[0])

        for _ in range(polls):
            if not await asyncio.to_thread(pending):
                return
            await asyncio.sleep(0.05)
        return
    import asyncpg

    conn = await asyncpg.connect(db)
    try:
        for _ in range(polls):
            if not await conn.fetchval(query):
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def timed(target: Server, name: str, payloads: list[bytes], args: argparse.Namespace, pg: str | None,
                db: str | None = None) -> Phase:  # fmt: skip
    """One phase; with `db`, its CPU counts until the events it caused are fanned out."""
    cpu, pg_before = target.cpu_seconds(), postgres_cpu(pg) if pg else {}
    result = await run_load(name, "127.0.0.1", target.port, payloads, concurrency=args.concurrency,
                            duration=args.duration)  # fmt: skip
    if db is not None:
        await outbox_drained(db)
    pg_cpu = cpu_since(pg_before, postgres_cpu(pg)) if pg else None
    return Phase(result, target.cpu_seconds() - cpu, pg_cpu)


async def measure_round(
    bare: Server, tessera: Server, licences: list[dict[str, Any]], args: argparse.Namespace, pg: str | None
) -> dict[str, Phase]:
    echo_body = orjson.dumps(FakeAgent().activation_body(licences[0]["key"], licences[0]["product"]))
    phases: dict[str, Phase] = {}
    for name, target in (("bare", bare), ("echo", tessera)):
        echo = [build_request("127.0.0.1", target.port, "/bench/echo", echo_body)] * 10_000_000
        await run_load("warm-up", "127.0.0.1", target.port, echo, concurrency=args.concurrency, duration=0.5)
        phases[name] = await timed(target, name, echo, args, pg)
    if args.phases == "echo":
        return phases
    count = int(args.duration * 4000)
    payloads, agents = activation_payloads(tessera.port, licences, count)
    phases["activation"] = await timed(tessera, "activation", payloads, args, pg, args.db)
    done = phases["activation"].result.requests
    # Map agents to their activation ids by asking again: the same host gets its seat back (200).
    ids = await _activation_ids(tessera.port, licences, agents[: min(done, count)])
    refreshes = [
        build_request("127.0.0.1", tessera.port, f"/v1/activations/{aid}/refresh",
                      orjson.dumps({"proof": agent.proof(aid)}))
        for agent, aid in ids
    ]  # fmt: skip
    phases["refresh"] = await timed(tessera, "refresh", refreshes, args, pg)
    return phases


async def _activation_ids(
    port: int, licences: list[dict[str, Any]], agents: list[FakeAgent]
) -> list[tuple[FakeAgent, str]]:
    import aiohttp

    out: list[tuple[FakeAgent, str]] = []
    sem = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as session:

        async def one(i: int, agent: FakeAgent) -> None:
            licence = licences[i % len(licences)]
            async with sem, session.post(f"http://127.0.0.1:{port}/v1/activations",
                                         json=agent.activation_body(licence["key"], licence["product"])) as r:  # fmt: skip
                if r.status == 200:
                    out.append((agent, (await r.json())["activation_id"]))

        await asyncio.gather(*(one(i, a) for i, a in enumerate(agents)))
    return out


def report(label: str, rounds: list[dict[str, Phase]]) -> dict[str, Any]:
    """Medians over the rounds; shares are of the bare echo measured in the same rounds."""

    def median(name: str, value: Any) -> float:
        return float(statistics.median(value(r[name]) for r in rounds))

    bare_rps, bare_us = median("bare", lambda p: p.result.rps), median("bare", lambda p: p.server_us)
    rows = {}
    for name in rounds[0]:
        phases = [r[name] for r in rounds]
        rps, us = median(name, lambda p: p.result.rps), median(name, lambda p: p.server_us)
        loadgen = median(name, lambda p: p.loadgen_us)
        pg = None if phases[0].postgres_us is None else median(name, lambda p: p.postgres_us)
        p50, p99 = median(name, lambda p: p.result.percentile(0.5)), median(name, lambda p: p.result.percentile(0.99))
        errors = sum(p.result.requests - sum(n for s, n in p.result.statuses.items() if s < 300) for p in phases)
        rows[name] = {"rps": round(rps), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "server_cpu_us": round(us),
                      "postgres_cpu_us": None if pg is None else round(pg), "loadgen_cpu_us": round(loadgen),
                      "share_of_bare_rps": round(rps / bare_rps, 3), "cpu_vs_bare": round(us / bare_us, 2),
                      "errors": errors, "rounds": len(phases)}  # fmt: skip
        pg_text = f" + {pg:5.0f} PG" if pg is not None else ""
        print(f"  {label:<22} {name:<10} {rps:7.0f} req/s  p50 {p50:6.2f}  p99 {p99:7.2f} ms  "
              f"CPU {us:5.0f} µs{pg_text}  ({us / bare_us:4.1f}x bare)  = {rps / bare_rps:6.1%} of bare  "
              f"loadgen {loadgen:3.0f} µs  non-2xx {errors}")  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per phase and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--phases", choices=("all", "echo"), default="all", help="echo: the two echoes only")
    parser.add_argument("--licences", type=int, default=64)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--server-venv", type=Path,
                        help="a venv with this checkout installed (pip install '.[server]'); default: built for the run")  # fmt: skip
    parser.add_argument("--bare-echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_echo:
        bare_echo(args.bare_echo, int(args.workers))
        return 0
    import uvloop

    backends = args.backends.split(",")
    if "postgres" in backends and not (
        os.environ.get("TESSERA_BENCH_POSTGRES_URL") or os.environ.get("TESSERA_TEST_POSTGRES_URL")
    ):
        print("PostgreSQL skipped: set TESSERA_BENCH_POSTGRES_URL (or TESSERA_TEST_POSTGRES_URL)")
        backends.remove("postgres")
    print(f"server bench: {args.concurrency} connections, {args.duration:g} s per phase, {args.rounds} rounds "
          f"(medians), {os.cpu_count()} CPUs; CPU is per request")  # fmt: skip
    summary: dict[str, Any] = {}
    venv_dir = tempfile.TemporaryDirectory()
    python = args.server_venv.resolve() / "bin" / "python" if args.server_venv else installed_server(Path(venv_dir.name) / "venv")
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp, database(backend, Path(tmp)) as db:
            keys = Path(tmp) / "keys"
            from server.db.migrate import upgrade

            upgrade(db)
            admin(db, keys, "keys", "generate")
            admin(db, keys, "product", "add", "bench-cad", "--name", "Bench CAD")
            admin(db, keys, "plan", "add", "bench", "--kind", "perpetual", "--model", "activation")
            licences = []
            for i in range(args.licences):
                admin(db, keys, "customer", "add", f"Bench customer {i}")
                licences.append(admin(db, keys, "licence", "issue", "--customer", f"Bench customer {i}",
                                      "--product", "bench-cad", "--plan", "bench", "--seats", "1000000"))  # fmt: skip
            for workers in [int(w) for w in args.workers.split(",")]:
                label = f"{backend}, {workers} process{'es' if workers > 1 else ''}"
                log = Path(tmp) / "server.log"
                with server(db, keys, workers, log, python=python, bare=True) as bare, \
                        server(db, keys, workers, log, python=python) as tessera:  # fmt: skip
                    pg = db.rpartition("/")[2] if backend == "postgres" else None
                    args.db = db
                    rounds = [uvloop.run(measure_round(bare, tessera, licences, args, pg))
                              for _ in range(args.rounds)]  # fmt: skip
                summary[label] = report(label, rounds)
    for backend in backends:
        one, two = summary.get(f"{backend}, 1 process"), summary.get(f"{backend}, 2 processes")
        if one and two:
            print(f"  {backend}: two processes vs one: " + ", ".join(
                f"{name} x{two[name]['rps'] / one[name]['rps']:.2f}" for name in one))  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
