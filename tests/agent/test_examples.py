"""The integration examples under examples/, each run as a product would run it, against the real daemon.

One daemon serves every question: a perpetual licence for cad-pro with maintenance until the end of
2026 and the module `export-step`. C is compiled with gcc; Java runs as a single-file program when a
JDK is installed; C# needs the .NET SDK and is documented in examples/README.md, not run here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_fakes import Installed, Vendor, agent_key_for, build_machine, claims_for, put_token
from test_agent_daemon import Daemon, running_daemon

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENTITLED, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
RELEASED = "2026-03-01"

Command = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def c_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    binary = tmp_path_factory.mktemp("c") / "tessera_check"
    source = EXAMPLES / "c/tessera_check.c"
    # Strict flags: the example must build cleanly wherever a product's build is strict.
    subprocess.run(
        ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-o", str(binary), str(source)],
        check=True,
        capture_output=True,
    )
    return binary


def _argv(language: str, request: pytest.FixtureRequest) -> list[str]:
    if language == "c":
        return [str(request.getfixturevalue("c_binary"))]
    if language == "python":
        # `-I`: the example stands alone, it may not lean on this checkout's packages.
        return [sys.executable, "-I", str(EXAMPLES / "python/tessera_check.py")]
    if language == "shell":
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed")
        return ["sh", str(EXAMPLES / "shell/tessera-check.sh")]
    if language == "java":
        if shutil.which("java") is None:
            pytest.skip("java is not installed")
        return ["java", str(EXAMPLES / "java/TesseraCheck.java")]
    raise AssertionError(language)


@pytest.fixture(params=["c", "python", "shell", "java"])
def example(request: pytest.FixtureRequest) -> Command:
    argv = _argv(request.param, request)

    def run(*args: str, socket_path: str | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "TESSERA_AGENT_SOCKET"}
        if socket_path is not None:
            env["TESSERA_AGENT_SOCKET"] = socket_path
        return subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=60, check=False)

    return run


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("examples")
    machine = build_machine(root / "machine")
    vendor = Vendor()
    jwks = vendor.write_jwks(root / "jwks.json")
    state_dir = root / "state"
    key = agent_key_for(state_dir)
    token = vendor.mint(claims_for(machine.facts(), key.x, maint_until="2026-12-31T00:00:00Z"))
    put_token(state_dir, token)
    installed = Installed(state_dir, jwks, machine, vendor, key.x, token)
    with running_daemon(installed, root) as running:
        # Read its watchdog pings as systemd would: a full notify queue would block the daemon's sends.
        listening = threading.Event()
        listening.set()
        reader = threading.Thread(target=_drain, args=(running.notify, listening), daemon=True)
        reader.start()
        try:
            yield running
        finally:
            listening.clear()
            reader.join()


def _drain(notify: socket.socket, listening: threading.Event) -> None:
    notify.settimeout(0.2)
    while listening.is_set():
        with contextlib.suppress(TimeoutError):
            notify.recv(4096)


@pytest.mark.parametrize(
    ("question", "exit_code", "code"),
    [
        pytest.param(("cad-pro", "5.2", RELEASED), ENTITLED, "entitled", id="entitled"),
        pytest.param(("cad-pro", "5.2", RELEASED, "export-step"), ENTITLED, "entitled", id="feature-entitled"),
        pytest.param(("cad-pro", "5.2", RELEASED, "cam"), REFUSED, "feature-not-licensed", id="feature-not-licensed"),
        pytest.param(("cad-pro", "5.2", "2027-02-01"), REFUSED, "release-not-entitled", id="release-after-maintenance"),
        pytest.param(("cad-lite", "5.2", RELEASED), REFUSED, "wrong-product", id="wrong-product"),
        # Characters a URL must encode reach the daemon intact: the product is still just not ours.
        pytest.param(("cad pro&x=1", "5.2+b", RELEASED), REFUSED, "wrong-product", id="encoded-question"),
        pytest.param(
            ("cad-pro", "5.2", RELEASED, "export step&x"), REFUSED, "feature-not-licensed", id="encoded-feature"
        ),
    ],
)
def test_answers_from_the_daemon(
    example: Command, daemon: Daemon, question: tuple[str, ...], exit_code: int, code: str
) -> None:
    result = example(*question, socket_path=daemon.socket_path)
    assert (result.returncode, result.stdout.strip()) == (exit_code, code), result.stderr


def test_a_malformed_release_date_is_a_usage_error(example: Command, daemon: Daemon) -> None:
    result = example("cad-pro", "5.2", "someday", socket_path=daemon.socket_path)
    assert result.returncode == USAGE and result.stdout == ""
    assert "invalid-request" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((), id="no-arguments"),
        pytest.param(("cad-pro", "5.2"), id="no-release"),
        pytest.param(("cad-pro", "5.2", RELEASED, "cam", "extra"), id="too-many"),
        pytest.param(("", "5.2", RELEASED), id="empty-product"),
    ],
)
def test_usage(example: Command, tmp_path: Path, args: tuple[str, ...]) -> None:
    result = example(*args, socket_path=str(tmp_path / "never-asked.sock"))
    assert result.returncode == USAGE and result.stdout == ""
    assert "usage" in result.stderr


def test_no_agent_is_exit_3(example: Command, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-agent.sock")
    result = example("cad-pro", "5.2", RELEASED, socket_path=missing)
    assert result.returncode == UNREACHABLE and result.stdout == ""
    assert missing in result.stderr


def test_a_socket_nobody_listens_on_is_exit_3(example: Command, tmp_path: Path) -> None:
    stale = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(stale)  # bound, never listening: what a crashed daemon leaves behind
        result = example("cad-pro", "5.2", RELEASED, socket_path=stale)
    assert result.returncode == UNREACHABLE and result.stdout == ""


def test_without_the_variable_the_default_socket_is_asked(example: Command) -> None:
    if os.path.exists("/run/tessera/agent.sock"):
        pytest.skip("an agent runs on this machine")
    result = example("cad-pro", "5.2", RELEASED, socket_path=None)
    assert result.returncode == UNREACHABLE and "/run/tessera/agent.sock" in result.stderr
