"""The server as a service: its systemd unit, the notify protocol, graceful shutdown, health, metrics and logs.

Every test runs the real `tessera-server serve` process on a free loopback port; systemd's side of
the notify protocol is a Unix datagram socket the test binds and passes as NOTIFY_SOCKET.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import PASSPHRASE, ROOT, LiveServer, ServerProcess, free_port, issue_demo_licence
from tests.support.agent import FakeAgent
from tests.support.http import get, post, request

UNITS = ROOT / "systemd"
ANALYZE = shutil.which("systemd-analyze")
WATCHDOG_USEC = 400_000  # pings every 0.2 s: short enough to count several in a second


# ------------------------------------------------------------------ the unit


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / "tessera-server.service")
    return parser


def test_unit_is_hardened_speaks_notify_and_stops_gently() -> None:
    service = unit()["Service"]
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "KillMode": "mixed",  # SIGTERM to the supervisor only; it forwards and waits
        "User": "tessera",
        "StateDirectory": "tessera",
        "ConfigurationDirectory": "tessera",
        "Environment": "TESSERA_KEY_PASSPHRASE_FILE=%d/key-passphrase",  # the last Environment= line
        "LoadCredential": "key-passphrase:/etc/tessera/key-passphrase",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "MemoryDenyWriteExecute": "yes",
        "UMask": "0077",
    }
    assert {k: service.get(k) for k in expected} == expected
    assert "TESSERA_CONFIG=%E/tessera/server.toml" in (UNITS / "tessera-server.service").read_text()
    assert service["ExecStart"] == "/usr/bin/tessera-server serve"
    assert service.get("WatchdogSec")


def test_example_config_is_valid_and_complete() -> None:
    from server.settings import ENVIRONMENT, read_config_file

    values = read_config_file(UNITS / "server.toml")
    assert set(values) == set(ENVIRONMENT.values()) - {"bench_echo"}


def _unit_for_this_checkout(directory: Path) -> Path:
    # verify insists that ExecStart exists: point it at this checkout's server.
    server = Path(sys.executable).parent / "tessera-server"
    path = directory / "tessera-server.service"
    path.write_text((UNITS / "tessera-server.service").read_text().replace("/usr/bin/tessera-server", str(server)))
    return path


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed on this machine (Debian: systemd)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    path = _unit_for_this_checkout(tmp_path)
    done = subprocess.run([str(ANALYZE), "verify", str(path)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in done.stderr.splitlines() if "tessera-server" in line]
    assert done.returncode == 0 and complaints == [], done.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed on this machine (Debian: systemd)")
def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    path = _unit_for_this_checkout(tmp_path)
    done = subprocess.run(
        [str(ANALYZE), "security", "--offline=yes", "--no-pager", str(path)], capture_output=True, text=True, timeout=60
    )
    if "--offline" in done.stderr and done.returncode != 0:
        pytest.skip(f"this systemd-analyze cannot judge a unit file offline: {done.stderr.strip()}")
    score = re.search(r"Overall exposure level for tessera-server\.service: ([0-9.]+)", done.stdout)
    assert score, done.stdout + done.stderr
    assert float(score.group(1)) <= 1.5, done.stdout  # docs/OPERATIONS.md quotes the figure


# ------------------------------------------------------------------ the notify protocol


class Notifications:
    """systemd's end of NOTIFY_SOCKET: every datagram the server sends, in order."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.received: list[str] = []

    def next(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            message = self.sock.recv(4096).decode()
        except TimeoutError:
            return None
        self.received.append(message)
        return message

    def expect(self, field: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None and field in message.splitlines():
                return message
        raise AssertionError(f"no {field} within {timeout}s; got {self.received}")

    def count(self, field: str, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        seen = 0
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            seen += message is not None and field in message.splitlines()
        return seen

    def close(self) -> None:
        self.sock.close()


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def prepared(tmp_path: Path) -> LiveServer:
    """A migrated SQLite database and a keyring; the test starts the process itself."""
    return LiveServer(f"sqlite:///{tmp_path / 'tessera.db'}", tmp_path)


@contextlib.contextmanager
def spawned(server: LiveServer, *extra: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "server.cli", "serve", "--db", server.db_url, "--keys-dir", str(server.keys_dir),
            "--port", str(server.process.port), *extra]  # fmt: skip
    environment = {**_base_env(), **(env or {})}
    with server.process.log_path.open("ab") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def admin_bearer(server: LiveServer) -> dict[str, str]:
    """/metrics on the public port needs an admin token."""
    return {"Authorization": "Bearer " + server.admin("token", "create", "--role", "admin")["token"]}


def _base_env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_", "TESSERA_"))}
    return env | {"TESSERA_KEY_PASSPHRASE": PASSPHRASE, "PYTHONUNBUFFERED": "1", "TESSERA_LOG_FORMAT": "json"}


def test_notify_ready_after_listening_watchdog_from_the_loop_stopping_on_sigterm(
    prepared: LiveServer, tmp_path: Path
) -> None:
    notes = Notifications(tmp_path)
    port = prepared.process.port
    env = {"NOTIFY_SOCKET": notes.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    try:
        with spawned(prepared, env=env) as process:
            ready = notes.expect("READY=1")
            assert accepts(port), "READY=1 came before the port accepted connections"
            assert f"MAINPID={process.pid}" in ready.splitlines()
            assert any(line.startswith("STATUS=serving on 127.0.0.1:") for line in ready.splitlines())
            assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200
            assert notes.count("WATCHDOG=1", 1.2) >= 3  # every 0.2 s
            # A wedged event loop stops the pings: systemd would kill and restart us.
            process.send_signal(signal.SIGSTOP)
            time.sleep(0.1)
            while notes.next(0.05) is not None:
                pass
            assert notes.count("WATCHDOG=1", 0.8) == 0
            process.send_signal(signal.SIGCONT)
            assert notes.count("WATCHDOG=1", 1.0) >= 2
            process.send_signal(signal.SIGTERM)
            stopping = notes.expect("STOPPING=1", timeout=10)
            assert any(line.startswith("STATUS=draining") for line in stopping.splitlines())
            assert process.wait(timeout=15) == 0
            assert not accepts(port)
    finally:
        notes.close()


def test_workers_ready_only_when_every_worker_listens_and_the_watchdog_needs_them_all(
    prepared: LiveServer, tmp_path: Path
) -> None:
    notes = Notifications(tmp_path)
    port = prepared.process.port
    env = {"NOTIFY_SOCKET": notes.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    try:
        with spawned(prepared, "--workers", "2", env=env) as process:
            ready = notes.expect("READY=1")
            assert f"MAINPID={process.pid}" in ready.splitlines()
            assert "STATUS=2 workers serving on 127.0.0.1:" + str(port) in ready.splitlines()
            workers = psutil.Process(process.pid).children()
            assert len(workers) == 2
            for worker in workers:  # each one is already listening on the shared port
                listening = [c for c in worker.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
                assert [c.laddr.port for c in listening] == [port]
            assert notes.count("WATCHDOG=1", 1.0) >= 3
            # One wedged worker is enough for the service to stop pinging.
            workers[0].suspend()
            time.sleep(0.3)
            while notes.next(0.05) is not None:
                pass
            assert notes.count("WATCHDOG=1", 0.8) == 0
            workers[0].resume()
            assert notes.count("WATCHDOG=1", 1.0) >= 2
            # Counters are summed over workers: whoever answers the scrape counts every request.
            for _ in range(30):
                assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
            _, _, text = request("GET", f"http://127.0.0.1:{port}/metrics", headers=admin_bearer(prepared))
            assert metric(text, "tessera_http_requests_total", method="GET", route="/healthz", status="200") == 30
            process.send_signal(signal.SIGTERM)
            notes.expect("STOPPING=1", timeout=10)
            assert process.wait(timeout=20) == 0
            assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
            assert not accepts(port)
            assert all(line.split("=")[0] in ("READY", "STATUS", "MAINPID", "WATCHDOG", "STOPPING")
                       for m in notes.received for line in m.splitlines())  # fmt: skip
    finally:
        notes.close()


def test_a_worker_that_dies_takes_the_service_down_so_systemd_restarts_it(prepared: LiveServer) -> None:
    with spawned(prepared, "--workers", "2") as process:
        deadline = time.monotonic() + 30
        while not accepts(prepared.process.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = psutil.Process(process.pid).children()
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = psutil.Process(process.pid).children()
        workers[0].kill()
        assert process.wait(timeout=20) == 128 + signal.SIGKILL
        assert not workers[1].is_running() or workers[1].status() == psutil.STATUS_ZOMBIE


def test_bad_keyring_passphrase_exits_with_a_stable_code(prepared: LiveServer) -> None:
    env = {"TESSERA_KEY_PASSPHRASE": "wrong"}
    with spawned(prepared, "--json", env=env) as process:
        assert process.wait(timeout=30) == 1  # refused (README, "Exit codes")
    errors = [json.loads(line) for line in prepared.process.log_path.read_text().splitlines() if '"code"' in line]
    assert errors and errors[-1]["code"] == "bad-passphrase"


# ------------------------------------------------------------------ graceful shutdown


def _slow_activation(port: int, body: bytes) -> tuple[socket.socket, bytes]:
    """Send the headers and half the body: the request is in flight until the rest arrives."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST /v1/activations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    sock.sendall(head + body[: len(body) // 2])
    return sock, body[len(body) // 2 :]


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_sigterm_finishes_in_flight_requests_and_leaves_nothing_half_written(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, seats=60)
    port = live_server.process.port
    slow, rest = _slow_activation(
        port, json.dumps(FakeAgent().activation_body(licence["key"], licence["product"])).encode()
    )
    # Let the server start handling it (headers parsed, handler waiting for the body).
    time.sleep(0.3)
    outcomes: list[tuple[int, str | None]] = []
    failures: list[str] = []

    def burst() -> None:
        body = FakeAgent().activation_body(licence["key"], licence["product"])
        try:
            status, reply = post(live_server.url + "/v1/activations", body)
            outcomes.append((status, reply.get("activation_id") if isinstance(reply, dict) else None))
        except OSError as exc:  # refused or reset: never answered, so the client would retry
            failures.append(type(exc).__name__)

    threads = [threading.Thread(target=burst) for _ in range(40)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    process = live_server.process.process
    assert process is not None
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while accepts(port) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not accepts(port), "still accepting new connections after SIGTERM"
    slow.sendall(rest)
    status, reply = _read_response(slow)
    slow.close()
    assert status == 201, reply
    for thread in threads:
        thread.join(timeout=30)
    assert process.wait(timeout=30) == 0
    assert time.monotonic() - started < 15
    live_server.process.process = None
    assert {s for s, _ in outcomes} <= {201}, outcomes
    answered = {aid for _, aid in outcomes} | {reply["activation_id"]}
    shown = live_server.admin("licence", "show", licence["id"])
    assert shown["seats_in_use"] == len(answered)  # every answered activation is there, nothing else
    live_ids = {a["id"] for a in shown["activations"] if a.get("ended_at") is None}
    assert live_ids == answered
    assert len(outcomes) + len(failures) == 40


# ------------------------------------------------------------------ health, readiness, metrics


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', sample))
        if sample.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def test_metrics_count_routes_by_template_activations_tokens_and_seats(live_server: LiveServer) -> None:
    licence = issue_demo_licence(live_server, seats=3)
    agent = FakeAgent()
    status, granted = post(
        live_server.url + "/v1/activations", agent.activation_body(licence["key"], licence["product"])
    )
    assert status == 201
    aid = granted["activation_id"]
    for _ in range(2):
        assert post(f"{live_server.url}/v1/activations/{aid}/refresh", {"proof": agent.proof(aid)})[0] == 200
    assert post(live_server.url + "/v1/activations", {"licence_key": "nope"})[0] == 422
    assert get(live_server.url + "/no/such/thing")[0] == 404
    _, headers, text = request("GET", live_server.url + "/metrics", headers=admin_bearer(live_server))
    assert headers["Content-Type"].startswith("text/plain")
    refresh = "/v1/activations/{activation_id}/refresh"
    assert metric(text, "tessera_http_requests_total", route=refresh, status="200", method="POST") == 2
    assert aid not in text  # templates, never raw paths
    assert metric(text, "tessera_http_requests_total", route="/v1/activations", status="201") == 1
    assert metric(text, "tessera_http_requests_total", route="/v1/activations", status="422") == 1
    assert metric(text, "tessera_http_requests_total", route="unmatched", status="404") == 1
    assert metric(text, "tessera_http_request_duration_seconds_count", route=refresh, status="200") == 2
    assert metric(text, "tessera_activations_total", outcome="created") == 1
    assert metric(text, "tessera_tokens_signed_total") == 3
    assert metric(text, "tessera_seats_in_use", product=licence["product"]) == 1
    assert metric(text, "tessera_seats", product=licence["product"]) == 3
    db_gauges = "tessera_db_writer_queue_depth" if live_server.db_url.startswith("sqlite") else "tessera_db_pool_size"
    assert re.search(rf"^{db_gauges} \d", text, re.M), text


def test_readyz_is_a_problem_when_the_database_does_not_answer(tmp_path: Path) -> None:
    server = LiveServer(f"sqlite:///{tmp_path / 'tessera.db'}", tmp_path)
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"  # nobody listens there
    process = ServerProcess(dead, server.keys_dir, tmp_path / "dead.log")
    metrics_port = free_port()  # the tokenless listener: a scrape needs no database to check a token
    env = {**_base_env(), "TESSERA_KEY_PASSPHRASE": PASSPHRASE, "TESSERA_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"}
    argv = [sys.executable, "-m", "server.cli", "serve", "--db", dead, "--keys-dir", str(server.keys_dir),
            "--port", str(process.port)]  # fmt: skip
    with process.log_path.open("ab") as log:
        child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not accepts(process.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(process.url + "/healthz") == (200, {"status": "ok"})
        status, headers, body = request("GET", process.url + "/readyz")
        assert status == 503
        assert headers["Content-Type"] == "application/problem+json"
        assert body["code"] == "not-ready" and "database" in body["detail"]
        assert body["request_id"] == headers["X-Request-ID"]
        assert request("GET", f"http://127.0.0.1:{metrics_port}/metrics")[0] == 200  # seats unknown, the rest served
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 0


# ------------------------------------------------------------------ logs


def test_one_json_event_per_request_with_its_id_and_no_secrets(tmp_path: Path) -> None:
    server = LiveServer(f"sqlite:///{tmp_path / 'tessera.db'}", tmp_path)
    server.process.extra_env = {"TESSERA_LOG_FORMAT": "json", "TESSERA_TRUSTED_PROXIES": "127.0.0.1"}
    server.start()
    try:
        licence = issue_demo_licence(server)
        token = server.admin("token", "create", "--role", "support")["token"]
        agent = FakeAgent()
        body = agent.activation_body(licence["key"], licence["product"])
        status, headers, granted = request(
            "POST",
            server.url + "/v1/activations",
            body,
            headers={"X-Request-ID": "lb-7f3a", "X-Forwarded-For": "203.0.113.9"},
        )
        assert (status, headers["X-Request-ID"]) == (201, "lb-7f3a")
        aid = granted["activation_id"]
        proof = agent.proof(aid)
        post(f"{server.url}/v1/activations/{aid}/refresh", {"proof": proof})
        # A key one character off (never the key itself: it may end in Z).
        wrong = {**body, "licence_key": licence["key"][:-1] + ("Y" if licence["key"].endswith("Z") else "Z")}
        _, headers, problem = request(
            "POST", server.url + "/v1/activations", wrong, headers={"X-Request-ID": "bad id!"}
        )
        assert problem["request_id"] == headers["X-Request-ID"] != "bad id!"  # ill-formed: replaced
        assert get(server.url + "/v1/licences", headers={"Authorization": f"Bearer {token}"})[0] == 200
        assert get(server.url + "/v1/licences", headers={"Authorization": "Bearer tsk_not-a-real-token"})[0] == 401
    finally:
        server.stop()
    log = server.process.log_path.read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(events) == len(log.splitlines()), "every log line is one JSON object"
    access = [e for e in events if e["logger"] == "tessera.access"]
    first = next(e for e in access if e["request_id"] == "lb-7f3a")
    assert first | {"duration_ms": 0, "ts": ""} == {
        "ts": "", "level": "info", "logger": "tessera.access", "msg": "POST /v1/activations 201",
        "request_id": "lb-7f3a", "method": "POST", "route": "/v1/activations", "status": 201,
        "duration_ms": 0, "client": "203.0.113.9",
    }  # fmt: skip
    assert first["duration_ms"] > 0
    assert {e["route"] for e in access} >= {
        "/v1/activations",
        "/v1/activations/{activation_id}/refresh",
        "/v1/licences",
    }
    assert len({e["request_id"] for e in access}) == len(access)
    for secret in (
        licence["key"],
        wrong["licence_key"],
        token,
        "tsk_not-a-real-token",
        proof,
        granted["token"],
        PASSPHRASE,
    ):
        assert secret not in log
    assert "Authorization" not in log and "Bearer" not in log
    assert any(e["msg"] == "stopped" for e in events)
