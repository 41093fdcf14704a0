"""`make bench` (server part): activation and refresh against the real server, as ratios of a bare echo.

For each store (SQLite; PostgreSQL when TESSERA_BENCH_POSTGRES_URL or TESSERA_TEST_POSTGRES_URL is
set) and for one and two server processes, it starts the real server with the bench echo route,
then measures in the same run and the same server configuration:

  echo        POST /bench/echo  (same app, same middlewares, no work): the baseline
  activation  POST /v1/activations, a new host every request (every request writes and signs)
  refresh     POST /v1/activations/{id}/refresh with a fresh signed proof

and prints throughput, p50/p99 latency and each throughput as a share of the echo.
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
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

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
    from server.admin_cli import main

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


@contextlib.contextmanager
def server(db: str, keys: Path, workers: int, log: Path) -> Iterator[int]:
    port = free_port()
    env = os.environ | {"TESSERA_KEY_PASSPHRASE": PASSPHRASE, "TESSERA_BENCH_ECHO": "1"}
    argv = [sys.executable, "-m", "server.cli", "serve", "--db", db, "--keys-dir", str(keys), "--port", str(port),
            "--workers", str(workers)]  # fmt: skip
    with log.open("ab") as handle:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.05)
        if workers > 1:
            time.sleep(1.0)  # every worker has bound the port (readiness only proves one)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def activation_payloads(port: int, licences: list[dict[str, Any]], count: int) -> tuple[list[bytes], list[FakeAgent]]:
    agents = [FakeAgent(hostname=f"bench-{i}") for i in range(count)]
    payloads = [
        build_request("127.0.0.1", port, "/v1/activations",
                      orjson.dumps(agent.activation_body(licences[i % len(licences)]["key"], licences[i % len(licences)]["product"])))
        for i, agent in enumerate(agents)
    ]  # fmt: skip
    return payloads, agents


async def measure(
    port: int, licences: list[dict[str, Any]], duration: float, concurrency: int, count: int
) -> dict[str, Result]:
    echo_body = orjson.dumps(FakeAgent().activation_body(licences[0]["key"], licences[0]["product"]))
    echo = [build_request("127.0.0.1", port, "/bench/echo", echo_body)] * 10_000_000
    await run_load("warm-up", "127.0.0.1", port, echo, concurrency=concurrency, duration=1.0)
    results = {"echo": await run_load("echo", "127.0.0.1", port, echo, concurrency=concurrency, duration=duration)}
    payloads, agents = activation_payloads(port, licences, count)
    results["activation"] = await run_load("activation", "127.0.0.1", port, payloads, concurrency=concurrency,
                                           duration=duration)  # fmt: skip
    done = results["activation"].requests
    # Map agents to their activation ids by asking again: the same host gets its seat back (200).
    ids = await _activation_ids(port, licences, agents[: min(done, count)])
    refreshes = [
        build_request("127.0.0.1", port, f"/v1/activations/{aid}/refresh", orjson.dumps({"proof": agent.proof(aid)}))
        for agent, aid in ids
    ]
    results["refresh"] = await run_load(
        "refresh", "127.0.0.1", port, refreshes, concurrency=concurrency, duration=duration
    )
    return results


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


def report(label: str, results: dict[str, Result]) -> dict[str, Any]:
    base = results["echo"].rps
    rows = {}
    for name, r in results.items():
        ok = sum(n for s, n in r.statuses.items() if s < 300)
        rows[name] = {"rps": round(r.rps), "p50_ms": round(r.percentile(0.5), 2), "p99_ms": round(r.percentile(0.99), 2),
                      "ratio": round(r.rps / base, 3), "ok": ok, "errors": r.requests - ok}  # fmt: skip
        print(f"  {label:<22} {name:<11} {r.rps:8.0f} req/s  p50 {r.percentile(0.5):6.2f} ms  "
              f"p99 {r.percentile(0.99):6.2f} ms  = {r.rps / base:6.1%} of echo  (non-2xx: {r.requests - ok})")  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--licences", type=int, default=64)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    import uvloop

    backends = args.backends.split(",")
    if "postgres" in backends and not (
        os.environ.get("TESSERA_BENCH_POSTGRES_URL") or os.environ.get("TESSERA_TEST_POSTGRES_URL")
    ):
        print("PostgreSQL skipped: set TESSERA_BENCH_POSTGRES_URL (or TESSERA_TEST_POSTGRES_URL)")
        backends.remove("postgres")
    print(f"server bench: {args.concurrency} connections, {args.duration:.0f} s per phase, {os.cpu_count()} CPUs")
    summary: dict[str, Any] = {}
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
                with server(db, keys, workers, Path(tmp) / "server.log") as port:
                    count = int(args.duration * 9000)
                    results = uvloop.run(measure(port, licences, args.duration, args.concurrency, count))
                summary[label] = report(label, results)
    for backend in backends:
        one, two = summary.get(f"{backend}, 1 process"), summary.get(f"{backend}, 2 processes")
        if one and two:
            print(f"  {backend}: two processes vs one: activation x{two['activation']['rps'] / one['activation']['rps']:.2f}, "
                  f"refresh x{two['refresh']['rps'] / one['refresh']['rps']:.2f}, echo x{two['echo']['rps'] / one['echo']['rps']:.2f}")  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
