"""The licence key from a file or standard input (`--key-file PATH`, `--key-file -`), never only as an argument
that `ps` shows every user: the real `tessera-agent` run as a process, against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import FakeMachine

from tests.conftest import LiveServer, issue_demo_licence

AGENT = str(Path(sys.executable).with_name("tessera-agent"))
KEY_COMMANDS = ("activate", "transfer-request", "offline-request")


class Run:
    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.exit_code, self.stdout, self.stderr = done.returncode, done.stdout, done.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> dict[str, Any]:
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr
        return dict(json.loads(lines[0]))


def agent(*argv: str, stdin: str | bytes = b"") -> Run:
    """The installed command in a clean environment (none of the TESSERA_* that `make test` exports)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    data = stdin.encode() if isinstance(stdin, str) else stdin
    done = subprocess.run([AGENT, *argv], input=data, capture_output=True, env=env, timeout=60, check=False)
    return Run(subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode()))


def options(state_dir: Path, machine: FakeMachine, server: LiveServer | None = None) -> list[str]:
    found = ["--state-dir", str(state_dir), "--sysroot", str(machine.root), "--json"]
    if server is not None:
        found += ["--server", server.url, "--jwks", str(server.jwks_path)]
    return found


@pytest.mark.parametrize("backend", ["sqlite"])  # how the key is read matters here, not the server's database
def test_a_key_from_standard_input_or_a_file_activates(
    live_server: LiveServer, machine: FakeMachine, other_machine: FakeMachine, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, seats=2)
    product, key = licence["product"], licence["key"]

    piped = agent(*options(tmp_path / "a", machine, live_server), "activate", "--key-file", "-",
                  "--product", product, stdin=key + "\n")  # fmt: skip
    assert piped.exit_code == 0, piped.stderr
    assert piped.json()["licence_id"] == licence["id"] and key not in piped.stdout + piped.stderr

    key_file = tmp_path / "licence-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    from_file = agent(*options(tmp_path / "b", other_machine, live_server), "activate", "--key-file",
                      str(key_file), "--product", product)  # fmt: skip
    assert from_file.exit_code == 0, from_file.stderr
    assert from_file.json()["activation_id"] != piped.json()["activation_id"]
    assert live_server.admin("licence", "show", licence["id"])["seats_in_use"] == 2

    question = ("check", "--product", product, "--version", "1.0", "--released", "2025-01-15")
    for state_dir, host in ((tmp_path / "a", machine), (tmp_path / "b", other_machine)):
        checked = agent(*options(state_dir, host), "--jwks", str(live_server.jwks_path), *question)
        assert checked.exit_code == 0 and checked.json()["code"] == "entitled", checked.stdout + checked.stderr

    # A wrong key read from standard input is the server's refusal, as the same key given as an argument is.
    wrong = agent(*options(tmp_path / "c", machine, live_server), "activate", "--key-file", "-",
                  "--product", product, stdin="TSR-NOT-A-KEY\n")  # fmt: skip
    as_argument = agent(*options(tmp_path / "d", machine, live_server), "activate", "TSR-NOT-A-KEY",
                        "--product", product)  # fmt: skip
    assert wrong.exit_code == as_argument.exit_code == 1
    assert wrong.error()["code"] == as_argument.error()["code"]


def _undecodable(tmp_path: Path) -> str:
    path = tmp_path / "latin-1"
    path.write_bytes(b"TSR-\xe9\xff\n")
    return str(path)


@pytest.mark.parametrize(
    ("source", "stdin", "why"),
    [
        pytest.param(lambda tmp: str(tmp / "absent"), b"", "cannot read the licence key from", id="missing-file"),
        pytest.param(lambda tmp: str(tmp), b"", "cannot read the licence key from", id="a-directory"),
        pytest.param(_undecodable, b"", "cannot read the licence key from", id="not-utf-8"),
        pytest.param(lambda tmp: "-", b"", "the licence key read from - is empty", id="empty-stdin"),
        pytest.param(lambda tmp: "-", b"\n", "the licence key read from - is empty", id="a-line-break"),
    ],
)
@pytest.mark.parametrize("command", KEY_COMMANDS)
def test_an_unreadable_or_empty_key_is_a_usage_error_that_writes_nothing(
    command: str, source: Any, stdin: bytes, why: str, machine: FakeMachine, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    path = source(tmp_path)
    rest = {"transfer-request": ["--reason", "defect"], "offline-request": ["--out", str(tmp_path / "req.json")]}
    done = agent(*options(state_dir, machine), command, "--key-file", path, "--product", "cad-pro",
                 *rest.get(command, []), stdin=stdin)  # fmt: skip
    assert (done.exit_code, done.error()["code"]) == (2, "secret-unreadable"), done.stderr
    assert why in done.error()["detail"] and done.stdout == ""
    assert not state_dir.exists() and not (tmp_path / "req.json").exists()


def test_an_empty_key_file_is_refused(machine: FakeMachine, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    done = agent(*options(tmp_path / "state", machine), "activate", "--key-file", str(empty), "--product", "p")
    assert (done.exit_code, done.error()["code"]) == (2, "secret-unreadable")
    assert done.error()["detail"] == f"the licence key read from {empty} is empty"


@pytest.mark.parametrize("command", KEY_COMMANDS)
def test_the_key_is_given_once(command: str, machine: FakeMachine, tmp_path: Path) -> None:
    rest = {"transfer-request": ["--reason", "defect"], "offline-request": ["--out", str(tmp_path / "req.json")]}
    base = [*options(tmp_path / "state", machine), command, "--product", "cad-pro", *rest.get(command, [])]
    both = agent(*base, "TSR-1", "--key-file", "-", stdin="TSR-1\n")
    assert (both.exit_code, both.error()["code"]) == (2, "usage")
    neither = agent(*base)
    assert (neither.exit_code, neither.error()["code"]) == (2, "licence-key-missing")
    assert "--key-file" in neither.error()["detail"]
    text = agent(*[a for a in base if a != "--json"])  # the same refusal for a person: one line
    assert text.exit_code == 2 and text.stderr.startswith("tessera-agent: licence-key-missing: ")
    assert not (tmp_path / "state").exists()


def test_standard_input_gives_one_secret(machine: FakeMachine, tmp_path: Path) -> None:
    done = agent(*options(tmp_path / "state", machine), "transfer-request", "--key-file", "-", "--product",
                 "cad-pro", "--reason", "defect", "--api-token-file", "-", stdin="TSR-1\n")  # fmt: skip
    assert (done.exit_code, done.error()["code"]) == (2, "usage")


def test_an_unreadable_api_token_file_is_a_usage_error(machine: FakeMachine, tmp_path: Path) -> None:
    done = agent(*options(tmp_path / "state", machine), "transfer-request", "TSR-1", "--product", "cad-pro",
                 "--reason", "defect", "--api-token-file", str(tmp_path / "absent"))  # fmt: skip
    assert (done.exit_code, done.error()["code"]) == (2, "secret-unreadable")
    assert "API token" in done.error()["detail"]


def test_offline_request_reads_the_key_from_standard_input(machine: FakeMachine, tmp_path: Path) -> None:
    out = tmp_path / "req.json"
    done = agent(*options(tmp_path / "state", machine), "offline-request", "--key-file", "-", "--product",
                 "cad-pro", "--out", str(out), stdin="TSR-OFFLINE-1\n")  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert done.json() == {"written": str(out), "product": "cad-pro"}
    assert "TSR-OFFLINE-1" not in out.read_text()  # the request carries salted digests, not the key
    assert json.loads(out.read_text())["request"].count(".") == 2  # a JWS


def test_fingerprint_salts_with_a_key_from_a_file_as_with_the_argument(machine: FakeMachine, tmp_path: Path) -> None:
    base = options(tmp_path / "state", machine)

    def digests(run: Run) -> list[str]:
        assert run.exit_code == 0, run.stderr
        return [c["digest"] for c in run.json()["components"]]

    as_argument = agent(*base, "fingerprint", "--licence-key", "TSR-SALT-1")
    from_stdin = agent(*base, "fingerprint", "--key-file", "-", stdin="TSR-SALT-1\n")
    unsalted = agent(*base, "fingerprint")
    assert digests(from_stdin) == digests(as_argument) != digests(unsalted)
    assert from_stdin.json()["salt_from"] == "licence key"
    assert unsalted.json()["salt_from"] == "none (pass --key-file)"


@pytest.mark.parametrize("command", [*KEY_COMMANDS, "fingerprint"])
def test_the_help_says_a_key_argument_is_visible_to_other_users(command: str) -> None:
    done = agent(command, "--help")
    assert done.exit_code == 0
    text = " ".join(done.stdout.split())
    assert "visible to other users of this machine (ps): prefer --key-file" in text
    assert "--key-file PATH" in text and "- reads it from standard input" in text
