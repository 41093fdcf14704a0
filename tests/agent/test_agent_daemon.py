"""The daemon as a real process on a real Unix socket, with systemd's protocols spoken by the test."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import DAY, Installed

from client_agent import Checker
from client_agent.cli import _ask_daemon
from client_agent.daemon import listen_fds, sd_notify, watchdog_interval

RELEASED = "2026-03-01"


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def get(path: str, url: str) -> tuple[int, dict[str, Any]]:
    connection = UnixHTTP(path)
    try:
        connection.request("GET", url)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    socket_path: str
    notify: socket.socket
    log: Path

    def expect(self, message: str, timeout: float = 15.0) -> str:
        """Wait for a notification from the daemon, the way systemd does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.notify.recv(4096).decode()
            except TimeoutError:
                break
            if message in data.split("\n"):
                return data
        raise AssertionError(f"no {message!r} from the daemon; log: {self.log.read_text()[-2000:]}")

    def check(self, product: str = "cad-pro", released: str = RELEASED) -> tuple[int, dict[str, Any]]:
        return get(self.socket_path, f"/v1/check?product={product}&version=5.2&released={released}")


@contextmanager
def running_daemon(
    installed: Installed,
    tmp_path: Path,
    *,
    server: str | None = None,
    activated_socket: socket.socket | None = None,
) -> Iterator[Daemon]:
    socket_path = str(tmp_path / "run/agent.sock")
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    env = os.environ | {
        "TESSERA_AGENT_STATE_DIR": str(installed.state_dir),
        "TESSERA_AGENT_JWKS": str(installed.jwks),
        "TESSERA_AGENT_SYSROOT": str(installed.machine.root),
        "TESSERA_AGENT_SOCKET": socket_path,
        "NOTIFY_SOCKET": notify_path,
        "WATCHDOG_USEC": "200000",
    }
    if server:
        env["TESSERA_AGENT_SERVER"] = server
    argv = [sys.executable, "-m", "client_agent.cli", "serve"]
    pass_fds: tuple[int, ...] = ()
    if activated_socket is not None:
        # What systemd does between fork and exec: the socket as fd 3, LISTEN_PID = the child.
        socket_path = activated_socket.getsockname()
        argv = [sys.executable, "-c", (
            "import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd);"
            "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()));"
            "os.execv(sys.executable, [sys.executable, '-m', 'client_agent.cli', 'serve'])"
        ), str(activated_socket.fileno())]  # fmt: skip
        pass_fds = (activated_socket.fileno(),)
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, pass_fds=pass_fds)
    daemon = Daemon(process, socket_path, notify, log)
    try:
        daemon.expect("READY=1")
        yield daemon
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        notify.close()


def test_answers_like_the_in_process_check_and_stops_cleanly(install: Callable[..., Installed], tmp_path: Path) -> None:
    installed = install(maint_until="2026-12-31T00:00:00Z")
    in_process = Checker(
        state_dir=str(installed.state_dir), jwks=str(installed.jwks), sysroot=str(installed.machine.root)
    )
    with running_daemon(installed, tmp_path) as daemon:
        assert os.stat(daemon.socket_path).st_mode & 0o777 == 0o666
        for product, released in (("cad-pro", RELEASED), ("cad-pro", "2027-02-01"), ("cad-lite", RELEASED)):
            status, body = daemon.check(product, released)
            expected = in_process.check(product, "5.2", date.fromisoformat(released)).code
            assert body["code"] == expected
            assert status == (200 if expected == "entitled" else 403)
        status, problem = get(daemon.socket_path, "/v1/check?product=cad-pro")
        assert status == 400 and problem["code"] == "invalid-request"
        status, problem = get(daemon.socket_path, "/v1/check?product=cad-pro&version=1&released=someday")
        assert status == 400 and problem["code"] == "invalid-request"
        # The CLI's client for users who cannot read the state asks the same socket.
        assert _ask_daemon(daemon.socket_path, "cad-pro", "5.2", RELEASED)["code"] == "entitled"  # type: ignore[index]
        status, info = get(daemon.socket_path, "/v1/status")
        assert status == 200 and info["active"] is True and info["daemon"]["pid"] == daemon.process.pid
        assert installed.token not in json.dumps(info)
        daemon.expect("WATCHDOG=1")
        daemon.expect("WATCHDOG=1")  # keeps pinging
        daemon.process.send_signal(signal.SIGTERM)
        daemon.expect("STOPPING=1")
        assert daemon.process.wait(timeout=15) == 0
        assert not os.path.exists(daemon.socket_path)  # it created the socket, it removes it


def test_socket_activation(install: Callable[..., Installed], tmp_path: Path) -> None:
    installed = install()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = str(tmp_path / "activated.sock")
    listener.bind(path)
    listener.listen(16)
    try:
        with running_daemon(installed, tmp_path, activated_socket=listener) as daemon:
            listener.close()  # only the daemon holds it now
            status, body = daemon.check()
            assert (status, body["code"]) == (200, "entitled")
            assert not os.path.exists(tmp_path / "run/agent.sock")  # did not bind its own
            daemon.process.send_signal(signal.SIGTERM)
            assert daemon.process.wait(timeout=15) == 0
            assert os.path.exists(path)  # systemd's socket is systemd's to remove
    finally:
        listener.close()


def test_refresh_failures_back_off_and_the_cache_keeps_answering(
    install: Callable[..., Installed], tmp_path: Path
) -> None:
    # Lease two-thirds gone: a refresh is due at once; the server is down (a closed port).
    installed = install(now=time.time() - 20 * DAY, lease_days=30)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with running_daemon(installed, tmp_path, server=closed) as daemon:
        deadline = time.monotonic() + 15
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            info = get(daemon.socket_path, "/v1/status")[1]
            if info["daemon"]["refresh"]["failures"] >= 1:
                break
        refresh = info["daemon"]["refresh"]
        assert refresh["failures"] == 1 and refresh["last_error"].startswith("server-unreachable")
        assert refresh["next_at"] is not None
        assert daemon.check()[1]["code"] == "entitled"
        assert info["last_error"]["code"] == "server-unreachable"  # also kept in the state for `status`


@pytest.mark.parametrize(
    ("environ", "pid", "expected"),
    [
        pytest.param({"LISTEN_PID": "42", "LISTEN_FDS": "2"}, 42, [3, 4], id="ours"),
        pytest.param({"LISTEN_PID": "41", "LISTEN_FDS": "1"}, 42, [], id="meant-for-another-process"),
        pytest.param({"LISTEN_FDS": "1"}, 42, [], id="no-pid"),
        pytest.param({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, 42, [], id="garbage"),
    ],
)
def test_listen_fds(environ: dict[str, str], pid: int, expected: list[int]) -> None:
    assert listen_fds(environ, pid=pid) == expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({"WATCHDOG_USEC": "30000000"}, 15.0, id="half-of-watchdogsec"),
        pytest.param({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 15.0, id="our-pid"),
        pytest.param({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, None, id="another-pid"),
        pytest.param({}, None, id="no-watchdog"),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(environ, pid=7) == expected


def test_sd_notify_abstract_and_absent(tmp_path: Path) -> None:
    assert sd_notify("READY=1", {}) is False
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"tessera-test-{os.getpid()}"
    receiver.bind("\0" + name)
    try:
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert receiver.recv(64) == b"READY=1"
    finally:
        receiver.close()


def test_the_daemon_schedules_a_refresh_ahead_of_the_subscription_end(
    install: Callable[..., Installed], tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    now = time.time()
    use_until = now + 2 * DAY
    installed = install(
        now=now, lease_days=30, kind="subscription", maint_until=None,
        use_until=datetime.fromtimestamp(use_until, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )  # fmt: skip
    with running_daemon(installed, tmp_path, server="http://127.0.0.1:9") as daemon:
        deadline = time.monotonic() + 15
        next_at = None
        while time.monotonic() < deadline and next_at is None:
            next_at = get(daemon.socket_path, "/v1/status")[1]["daemon"]["refresh"]["next_at"]
        assert next_at is not None
        planned = datetime.fromisoformat(next_at).timestamp()
        # A day before the term ends (minus up to a quarter day of jitter), not at half the 30-day lease.
        assert use_until - 1.25 * DAY - 120 <= planned <= use_until - DAY + 120, next_at


def _cli_check(env: dict[str, str], *extra: str, product: str = "cad-pro") -> tuple[int, str, list[str]]:
    """`tessera-agent check` in a new process: exit code, output, and which heavy modules it imported."""
    probe = (
        "import sys; from client_agent.cli import main; code = main(sys.argv[1:]); sys.stdout.flush();"
        "print(sorted(m for m in ('argparse', 'cryptography', 'client_agent.checker', 'typing') if m in sys.modules),"
        " file=sys.stderr); sys.exit(code)"
    )
    argv = [sys.executable, "-c", probe, "check", "--product", product, "--version", "5.2", "--released", RELEASED]
    done = subprocess.run([*argv, *extra], env=env, capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout, json.loads(done.stderr.strip().splitlines()[-1].replace("'", '"'))


def test_check_asks_the_running_daemon_first_and_answers_as_the_local_check(
    install: Callable[..., Installed], tmp_path: Path
) -> None:
    installed = install()
    with running_daemon(installed, tmp_path) as daemon:
        env = os.environ | {
            "TESSERA_AGENT_STATE_DIR": str(installed.state_dir),
            "TESSERA_AGENT_JWKS": str(installed.jwks),
            "TESSERA_AGENT_SYSROOT": str(installed.machine.root),
        }
        asked = env | {"TESSERA_AGENT_SOCKET": daemon.socket_path}
        local = env | {"TESSERA_AGENT_SOCKET": str(tmp_path / "no-daemon.sock")}
        for product, extra in (("cad-pro", ()), ("cad-pro", ("--json",)), ("cad-lite", ()), ("cad-lite", ("--json",))):
            by_daemon = _cli_check(asked, *extra, product=product)
            by_itself = _cli_check(local, *extra, product=product)
            assert by_daemon[:2] == by_itself[:2]  # the same exit code and the same words
            assert by_daemon[2] == []  # neither argparse nor the checker nor cryptography was imported
            assert "client_agent.checker" in by_itself[2]
        assert _cli_check(asked)[0] == 0 and _cli_check(asked, product="cad-lite")[0] == 1
        # The command line names another state: that state is checked, not the daemon's.
        elsewhere = tmp_path / "elsewhere"
        code, out, imported = _cli_check(asked, "--state-dir", str(elsewhere))
        assert code == 1 and "client_agent.checker" in imported and not out.startswith("entitled")
