"""Where Unix sockets are unavailable the daemon answers on a loopback address, every request carrying the
bearer token this start wrote to its token file: tested on Linux with the real daemon process."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_fakes import Installed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, token: str | None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _serve(installed: Installed, tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = os.environ | {"TESSERA_AGENT_STATE_DIR": str(installed.state_dir), "TESSERA_AGENT_JWKS": str(installed.jwks),
                        "TESSERA_AGENT_SYSROOT": str(installed.machine.root)}  # fmt: skip
    env.pop("NOTIFY_SOCKET", None)
    with (tmp_path / "daemon.log").open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "client_agent.cli", "serve", *extra], env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip


def test_the_loopback_api_answers_only_with_this_starts_token(
    install: Callable[..., Installed], tmp_path: Path
) -> None:
    installed = install(maint_until="2026-12-31T00:00:00Z")
    port, token_file = _free_port(), tmp_path / "run" / "agent.token"
    url = f"http://127.0.0.1:{port}/v1/check?product=cad-pro&version=5.2&released=2026-03-01"
    process = _serve(installed, tmp_path, "--listen", f"127.0.0.1:{port}", "--token-file", str(token_file))
    try:
        deadline = time.monotonic() + 20
        while not token_file.exists():
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
            time.sleep(0.05)
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o644 and len(token) >= 40  # users read, nobody writes
        while True:
            try:
                status, body = _get(url, token)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert (status, body["code"]) == (200, "entitled")
        for wrong in (None, "not-the-token", token[:-1]):
            status, problem = _get(url, wrong)
            assert (status, problem["code"]) == (401, "unauthorised") and token not in json.dumps(problem)
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert not token_file.exists()  # the token dies with the daemon

    # A second start makes a new token: the old one is worthless.
    process = _serve(installed, tmp_path, "--listen", f"127.0.0.1:{port}", "--token-file", str(token_file))
    try:
        deadline = time.monotonic() + 20
        while not token_file.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert token_file.read_text().strip() != token
        while True:  # the token is written before the listener answers: wait for its first answer
            try:
                status = _get(url, token)[0]
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert status == 401
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_only_a_loopback_address_and_a_token_file_are_accepted(
    install: Callable[..., Installed], tmp_path: Path
) -> None:
    installed = install(maint_until="2026-12-31T00:00:00Z")
    for extra, code in ((("--listen", "0.0.0.0:8765", "--token-file", str(tmp_path / "t")), "listen-not-loopback"),
                        (("--listen", "127.0.0.1:8765"), "token-file-missing")):  # fmt: skip
        process = _serve(installed, tmp_path, "--json", *extra)
        assert process.wait(timeout=20) != 0
        assert code in (tmp_path / "daemon.log").read_text()
