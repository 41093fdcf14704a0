"""Secrets never echoed: a database URL's password is masked in errors and logs; the keyring passphrase is read
from a file or standard input instead of the command line."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from server.cli.kit import redact
from server.logs import JsonFormatter, TextFormatter
from tests.cli.conftest import BIN, Installation, run
from tests.conftest import PASSPHRASE, free_port, fresh_database

PASSWORD = "s3cret-" + secrets.token_hex(4)
UNREACHABLE = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/tessera"
MASKED = "postgresql://postgres:***@127.0.0.1:1/tessera"


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_a_database_password_is_masked_in_admin_errors(as_json: bool) -> None:
    done = run("tessera-admin", "--db", UNREACHABLE, *(["--json"] if as_json else []), "licence", "list")
    assert done.exit_code == 5
    assert PASSWORD not in done.stdout + done.stderr
    detail = done.error()["detail"] if as_json else done.stderr
    assert MASKED in detail


def test_a_database_password_is_masked_in_server_errors() -> None:
    done = run("tessera-server", "migrate", "--db", UNREACHABLE)
    assert done.exit_code == 5 and MASKED in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.postgres
def test_migrate_reports_the_database_without_its_password(tmp_path: Path) -> None:
    with fresh_database("postgres", tmp_path) as url:
        # A trust-authenticated server ignores the password, so the URL can carry one that must not be shown.
        scheme, _, rest = url.partition("://")
        user, _, host = rest.partition("@")
        with_password = f"{scheme}://{user.split(':')[0]}:{PASSWORD}@{host}"
        done = run("tessera-server", "--json", "migrate", "--db", with_password)
    assert done.exit_code == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr and ":***@" in done.json()["database"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param(UNREACHABLE + " unreachable", MASKED + " unreachable", id="postgresql"),
        pytest.param("postgresql+asyncpg://u:p@ss/w@h:5432/db", "postgresql+asyncpg://u:***@h:5432/db", id="at-slash"),
        pytest.param("'postgresql://u:p@h/db'", "'postgresql://u:***@h/db'", id="quoted"),
        pytest.param("postgresql://u@h/db", "postgresql://u@h/db", id="no-password"),
        pytest.param("sqlite:///var/tessera.db", "sqlite:///var/tessera.db", id="sqlite"),
        pytest.param("http://127.0.0.1:8400/readyz", "http://127.0.0.1:8400/readyz", id="port-not-password"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_log_lines_mask_a_database_password_in_the_message_the_fields_and_a_traceback(
    formatter: logging.Formatter,
) -> None:
    try:
        raise ConnectionError(f"cannot reach {UNREACHABLE}")
    except ConnectionError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("tessera.server", logging.ERROR, __file__, 1, "opening %s", (UNREACHABLE,), exc_info)
    record.database = UNREACHABLE
    line = formatter.format(record)
    assert PASSWORD not in line
    assert line.count(MASKED) == 3, line
    if isinstance(formatter, JsonFormatter):
        event = json.loads(line)
        assert event["msg"] == f"opening {MASKED}" and event["database"] == MASKED


def _without_passphrase_env() -> dict[str, str]:
    return {"TESSERA_KEY_PASSPHRASE": ""}


def test_the_admin_reads_the_keyring_passphrase_from_a_file_or_stdin(
    installation: Installation, tmp_path: Path
) -> None:
    no_env = _without_passphrase_env()
    secret_file = tmp_path / "passphrase"
    secret_file.write_text(PASSPHRASE + "\n")
    secret_file.chmod(0o600)
    made = installation.admin("--json", "--passphrase-file", str(secret_file), "keys", "generate", env=no_env)
    assert made.exit_code == 0, made.stderr
    assert PASSPHRASE not in made.stdout + made.stderr

    rotated = installation.admin("--json", "--passphrase-file", "-", "keys", "rotate", stdin=PASSPHRASE + "\n",
                                 env=no_env)  # fmt: skip
    assert rotated.exit_code == 0, rotated.stderr
    without = installation.admin("--json", "keys", "rotate", env=no_env)
    assert (without.exit_code, without.error()["code"]) == (2, "passphrase-required")
    empty = installation.admin("--json", "--passphrase-file", "-", "keys", "rotate", stdin="", env=no_env)
    assert (empty.exit_code, empty.error()["code"]) == (2, "secret-unreadable")
    absent = installation.admin("--json", "--passphrase-file", str(tmp_path / "absent"), "keys", "rotate", env=no_env)
    assert (absent.exit_code, absent.error()["code"]) == (2, "secret-unreadable")
    states = sorted(key["state"] for key in installation.ok("keys", "list"))
    assert states == ["active", "published"]


@pytest.mark.parametrize("workers", [1, 2])  # a supervisor's workers cannot read stdin again
def test_the_server_reads_the_keyring_passphrase_from_stdin(
    installation: Installation, tmp_path: Path, workers: int
) -> None:
    assert installation.admin("keys", "generate").exit_code == 0
    wrong = run("tessera-server", "--json", "serve", "--db", installation.db_url, "--keys-dir",
                str(installation.keys_dir), "--port", str(free_port()), "--passphrase-file", "-",
                stdin="not-it\n", env=_without_passphrase_env())  # fmt: skip
    assert (wrong.exit_code, wrong.error()["code"]) == (1, "bad-passphrase")
    assert "not-it" not in wrong.stdout + wrong.stderr
    port = free_port()
    log = tmp_path / "server.log"
    argv = [str(BIN / "tessera-server"), "serve", "--db", installation.db_url, "--keys-dir", str(installation.keys_dir),
            "--port", str(port), "--workers", str(workers), "--passphrase-file", "-"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    with log.open("wb") as out:
        server = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        assert server.stdin is not None
        server.stdin.write(PASSPHRASE.encode() + b"\n")
        server.stdin.close()
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert PASSPHRASE not in log.read_text()


def test_at_a_terminal_the_passphrase_is_typed_without_echo(installation: Installation) -> None:
    import pty
    import select

    argv = [str(BIN / "tessera-admin"), "--db", installation.db_url, "--keys-dir", str(installation.keys_dir),
            "--json", "--passphrase-file", "-", "keys", "generate"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    pid, terminal = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.execve(argv[0], argv, env)
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 30
        while marker not in seen:
            assert time.monotonic() < deadline, seen
            if select.select([terminal], [], [], 0.5)[0]:
                try:
                    seen += os.read(terminal, 4096)
                except OSError:  # the child closed the terminal
                    break

    try:
        read_until(b"keyring passphrase: ")
        os.write(terminal, PASSPHRASE.encode() + b"\n")
        read_until(b'"kid"')
    finally:
        deadline = time.monotonic() + 10
        while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if waited[0] == 0:  # still waiting for input: the test fails below
            os.kill(pid, signal.SIGKILL)
            waited = os.waitpid(pid, 0)
        os.close(terminal)
    assert os.waitstatus_to_exitcode(waited[1]) == 0, seen
    assert PASSPHRASE.encode() not in seen  # not echoed
    assert installation.ok("keys", "list")[0]["state"] == "active"
