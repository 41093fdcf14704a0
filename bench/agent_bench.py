"""Benchmark the agent's hot paths beside baselines measured in the same run.

    .venv/bin/python bench/agent_bench.py [--calls 2000] [--cli-calls 2000] [--json]

Needs no server: it mints a token for *this* machine with a throwaway vendor
key (or uses --state-dir/--jwks of a real activation). Measures

- fresh fingerprint (read every source + digest), p50;
- in-process `Checker.check`, warm, p50/p99;
- the first check of a process (load the state, verify the token's signature
  and the clock marks, read the fingerprint), p50;
- the daemon's `GET /v1/check` over a Unix socket vs a bare aiohttp echo on
  the same kind of socket, same client, same event loop;
- `tessera-agent check` wall time vs `python -c pass`, both in a normally installed (not
  editable) venv built for the run (or --cli-venv): with the daemon running (the command asks
  its socket) and without it (the command checks the state itself);
- the daemon's resident memory;

and prints each against its budget from issue 3.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client_agent import Checker, fingerprint  # noqa: E402
from client_agent.state import State, StateStore  # noqa: E402

PRODUCT, VERSION, RELEASED = "bench-product", "1.0", "2026-01-15"


# ------------------------------------------------------------------ setup


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint_setup(directory: Path, sysroot: str) -> tuple[Path, Path]:
    """A state directory holding a token for this machine, signed by a throwaway vendor key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    vendor = Ed25519PrivateKey.generate()
    jwks = directory / "jwks.json"
    jwks.write_text(
        json.dumps(
            {
                "keys": [
                    {
                        "kty": "OKP",
                        "crv": "Ed25519",
                        "kid": "bench",
                        "alg": "EdDSA",
                        "use": "sig",
                        "x": b64u(vendor.public_key().public_bytes_raw()),
                    }
                ]
            }
        )
    )
    state_dir = directory / "state"
    store = StateStore(str(state_dir))
    store.update(lambda _s, _k: None)
    agent_key = store.agent_key()
    assert agent_key is not None
    salt = fingerprint.licence_salt("TSR-BENCH-00000")
    components = [
        {"kind": k, "digest": d} for k, d in fingerprint.digest_components(fingerprint.read_facts(sysroot), salt)
    ]
    now = int(time.time())
    claims = {
        "iss": "http://127.0.0.1:8400",
        "aud": PRODUCT,
        "sub": "bench-licence",
        "jti": "bench-activation",
        "iat": now,
        "nbf": now,
        "exp": now + 30 * 86400,
        "kind": "perpetual",
        "model": "activation",
        "host": {"salt": salt, "components": components, "match": max(1, len(components) - 1)},
        "maint_until": "2027-01-01T00:00:00Z",
        "features": [],
        "seats": 1,
        "cnf": {"jwk": agent_key.public_jwk()},
    }
    head = b64u(json.dumps({"alg": "EdDSA", "kid": "bench", "typ": "tessera-activation+jwt"}).encode())
    body = b64u(json.dumps(claims).encode())
    token = f"{head}.{body}.{b64u(vendor.sign(f'{head}.{body}'.encode()))}"

    def install(state: State, _key: Any) -> None:
        state.token, state.product, state.activation_id = token, PRODUCT, "bench-activation"
        state.high_water = now

    store.update(install)
    return state_dir, jwks


def installed_venv(where: Path) -> Path:
    """A venv with this checkout installed as a customer installs it: `pip install .`, not editable."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    subprocess.run([str(where / "bin" / "pip"), "install", "--quiet", str(ROOT)], check=True)
    return where


# ------------------------------------------------------------------ measuring


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def time_calls(call: Any, count: int, warmup: int = 100) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    clock = time.perf_counter
    for _ in range(count):
        started = clock()
        call()
        samples.append(clock() - started)
    return samples


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def http_getter(path: str, url: str) -> Any:
    """One keep-alive connection, like a product that asks repeatedly."""
    connection = UnixHTTP(path)

    def get() -> None:
        connection.request("GET", url)
        response = connection.getresponse()
        body = response.read()
        if response.status >= 500 or not body:
            raise RuntimeError(f"bad answer {response.status}")

    return get


def wait_for_socket(path: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited {process.returncode}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(path)
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {path}")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ------------------------------------------------------------------ the echo baseline


def echo_server(path: str) -> None:
    """Bare aiohttp over a Unix socket: one route, a small JSON body, the daemon's event loop."""
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"echo": request.rel_url.query.get("product")})

    app = web.Application()
    app.router.add_get("/v1/check", echo)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, path=path, print=None, access_log=None)


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--cli-calls", type=int, default=2000)
    parser.add_argument("--sysroot", default="/")
    parser.add_argument("--state-dir", help="benchmark an existing activation instead of a minted token")
    parser.add_argument("--jwks")
    parser.add_argument("--product", default=PRODUCT)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cli-venv", help="a normally installed venv to time the CLI in (default: built for the run)")
    parser.add_argument("--echo-server", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        echo_server(args.echo_server)
        return 0

    # An installed package ships compiled bytecode; a checkout run with
    # PYTHONDONTWRITEBYTECODE would recompile the agent on every CLI start.
    import compileall

    compileall.compile_dir(str(ROOT / "client_agent"), quiet=1)
    work = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    results: dict[str, Any] = {}
    try:
        if args.state_dir and args.jwks:
            state_dir, jwks = Path(args.state_dir), Path(args.jwks)
        else:
            state_dir, jwks = mint_setup(work, args.sysroot)
        env = os.environ | {
            "TESSERA_AGENT_STATE_DIR": str(state_dir),
            "TESSERA_AGENT_JWKS": str(jwks),
            "TESSERA_AGENT_SYSROOT": args.sysroot,
        }
        query = f"/v1/check?product={args.product}&version={VERSION}&released={RELEASED}"

        # fresh fingerprint: every source read again, then digested
        salt = fingerprint.licence_salt("TSR-BENCH-00000")
        samples = time_calls(
            lambda: fingerprint.digest_components(fingerprint.read_facts(args.sysroot), salt),
            min(args.calls, 500),
            warmup=20,
        )
        results["fingerprint_p50_us"] = percentiles(samples)[0] * 1e6

        # in-process
        checker = Checker(state_dir=str(state_dir), jwks=str(jwks), sysroot=args.sysroot)
        verdict = checker.check(args.product, VERSION, RELEASED)
        if not verdict.ok:
            raise SystemExit(f"the benchmark token is not entitled here: {verdict.code}: {verdict.detail}")
        p50, p99 = percentiles(time_calls(lambda: checker.check(args.product, VERSION, RELEASED), args.calls))
        results["inprocess_p50_us"], results["inprocess_p99_us"] = p50 * 1e6, p99 * 1e6

        # what every new process pays once: nothing persisted stands in for the verification
        def first_check() -> None:
            Checker(state_dir=str(state_dir), jwks=str(jwks), sysroot=args.sysroot, persist=False).check(
                args.product, VERSION, RELEASED
            )

        results["first_check_p50_us"] = percentiles(time_calls(first_check, min(args.calls, 500), warmup=20))[0] * 1e6

        # socket: the daemon vs a bare aiohttp echo, same client, interleaved start order
        echo_path, daemon_path = str(work / "echo.sock"), str(work / "agent.sock")
        echo = subprocess.Popen([sys.executable, __file__, "--echo-server", echo_path], env=env)
        agent_bin = shutil.which("tessera-agent", path=str(Path(sys.executable).parent)) or "tessera-agent"
        daemon = subprocess.Popen(
            [agent_bin, "serve", "--socket", daemon_path], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_socket(echo_path, echo)
            wait_for_socket(daemon_path, daemon)
            echo_get, daemon_get = http_getter(echo_path, query), http_getter(daemon_path, query)
            echo_samples, daemon_samples = [], []
            for _ in range(4):  # alternate rounds so drift hits both alike
                echo_samples += time_calls(echo_get, args.calls // 4, warmup=50)
                daemon_samples += time_calls(daemon_get, args.calls // 4, warmup=50)
            results["echo_p50_us"], results["echo_p99_us"] = (x * 1e6 for x in percentiles(echo_samples))
            results["socket_p50_us"], results["socket_p99_us"] = (x * 1e6 for x in percentiles(daemon_samples))
            results["daemon_rss_mb"] = rss_mb(daemon.pid)
            results["echo_rss_mb"] = rss_mb(echo.pid)
        finally:
            stop(daemon)
            stop(echo)

        # CLI vs python -c pass, interleaved, in a normally installed venv: an editable install's import
        # finder slows Python's own start-up and would flatter the ratio.
        venv = Path(args.cli_venv) if args.cli_venv else installed_venv(work / "venv")
        python, installed_agent = str(venv / "bin" / "python"), str(venv / "bin" / "tessera-agent")
        cli = [installed_agent, "check", "--product", args.product, "--version", VERSION, "--released", RELEASED]
        cli_socket = str(work / "cli-agent.sock")
        by_daemon, by_itself = (
            env | {"TESSERA_AGENT_SOCKET": cli_socket},
            env | {"TESSERA_AGENT_SOCKET": str(work / "none")},
        )
        daemon = subprocess.Popen([installed_agent, "serve"], env=by_daemon, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_for_socket(cli_socket, daemon)
            for which in (by_daemon, by_itself):
                if subprocess.run(cli, env=which, capture_output=True).returncode != 0:
                    raise SystemExit("`tessera-agent check` refused the benchmark token")
            bare, asking, alone = [], [], []
            for _ in range(args.cli_calls):
                for samples, argv, which in ((bare, [python, "-c", "pass"], env), (asking, cli, by_daemon),
                                             (alone, cli, by_itself)):  # fmt: skip
                    started = time.perf_counter()
                    subprocess.run(argv, env=which, check=True, stdout=subprocess.DEVNULL)
                    samples.append(time.perf_counter() - started)
        finally:
            stop(daemon)
        results["python_pass_p50_ms"], results["python_pass_p99_ms"] = (x * 1e3 for x in percentiles(bare))
        results["cli_p50_ms"], results["cli_p99_ms"] = (x * 1e3 for x in percentiles(asking))
        results["cli_local_p50_ms"], results["cli_local_p99_ms"] = (x * 1e3 for x in percentiles(alone))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    r = results
    ratios = {
        "socket_vs_echo": r["socket_p50_us"] / r["echo_p50_us"],
        "cli_vs_python": r["cli_p50_ms"] / r["python_pass_p50_ms"],
        "cli_local_vs_python": r["cli_local_p50_ms"] / r["python_pass_p50_ms"],
    }
    budgets = [
        ("in-process check p50", f"{r['inprocess_p50_us']:.1f} µs", r["inprocess_p50_us"] <= 20, "≤ 20 µs"),
        ("socket check p50 / echo p50", f"{ratios['socket_vs_echo']:.2f}x", ratios["socket_vs_echo"] <= 1.5, "≤ 1.5x"),
        (
            "CLI check (daemon) / python -c pass",
            f"{ratios['cli_vs_python']:.2f}x",
            ratios["cli_vs_python"] <= 3,
            "≤ 3x",
        ),
        ("fresh fingerprint p50", f"{r['fingerprint_p50_us']:.0f} µs", r["fingerprint_p50_us"] <= 1000, "≤ 1 ms"),
        ("daemon RSS", f"{r['daemon_rss_mb']:.1f} MB", r["daemon_rss_mb"] <= 50, "≤ 50 MB"),
    ]
    if args.json:
        print(
            json.dumps(
                {"results": results, "ratios": ratios, "budgets": {name: ok for name, _, ok, _ in budgets}}, indent=1
            )
        )
    else:
        print(f"{'measure':<34}{'p50':>12}{'p99':>12}")
        rows = [
            ("in-process check", f"{r['inprocess_p50_us']:.1f} µs", f"{r['inprocess_p99_us']:.1f} µs"),
            ("  first check of a process", f"{r['first_check_p50_us']:.0f} µs", ""),
            ("socket check (daemon)", f"{r['socket_p50_us']:.0f} µs", f"{r['socket_p99_us']:.0f} µs"),
            ("  baseline: bare aiohttp echo", f"{r['echo_p50_us']:.0f} µs", f"{r['echo_p99_us']:.0f} µs"),
            ("CLI `tessera-agent check`, daemon", f"{r['cli_p50_ms']:.1f} ms", f"{r['cli_p99_ms']:.1f} ms"),
            ("  without a daemon", f"{r['cli_local_p50_ms']:.1f} ms", f"{r['cli_local_p99_ms']:.1f} ms"),
            ("  baseline: python -c pass", f"{r['python_pass_p50_ms']:.1f} ms", f"{r['python_pass_p99_ms']:.1f} ms"),
            ("fresh fingerprint", f"{r['fingerprint_p50_us']:.0f} µs", ""),
            ("daemon RSS (echo baseline)", f"{r['daemon_rss_mb']:.1f} MB", f"({r['echo_rss_mb']:.1f} MB)"),
        ]
        for name, p50, p99 in rows:
            print(f"{name:<34}{p50:>12}{p99:>12}")
        print()
        for name, value, ok, target in budgets:
            print(f"{'ok  ' if ok else 'OVER'} {name:<34}{value:>10}  (budget {target})")
        print(f"     CLI check (no daemon) / python -c pass {ratios['cli_local_vs_python']:.2f}x  (it verifies the "
              "token's signature: cryptography's import is most of it)")  # fmt: skip
    return 0 if all(ok for *_, ok, _ in budgets) else 1


if __name__ == "__main__":
    sys.exit(main())
