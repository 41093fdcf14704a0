"""The server's newer answers, as the real CLI and daemon meet them: a seat rebound to another
agent key, a fingerprint too weak to bind; and a state copied from a machine with nothing identifying.

The licence server is faked here (canned HTTP answers) only because it cannot give these answers
yet or they are hard to provoke; the machines are fake sysroots."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import DAY, FakeLicenceServer, FakeMachine, Installed, build_machine
from test_agent_daemon import get, running_daemon

from client_agent.cli import main
from client_agent.state import State

ACTIVATION = "5f0d7c2a-51b8-4d0e-9a57-b7c1e2b3c4d5"
REFRESH = f"/v1/activations/{ACTIVATION}/refresh"
REBOUND_DETAIL = "this seat was bound to another agent key on the same machine"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, Any]:
    rc = main([*argv, "--json"])
    captured = capsys.readouterr()
    out = json.loads(captured.out) if captured.out.strip() else None
    err = json.loads(captured.err) if captured.err.strip() else None
    return rc, out, err


def agent_args(installed: Installed, server: str | None = None, machine: FakeMachine | None = None) -> list[str]:
    args = ["--state-dir", str(installed.state_dir), "--jwks", str(installed.jwks),
            "--sysroot", str((machine or installed.machine).root)]  # fmt: skip
    return args + (["--server", server] if server else [])


def served_by(installed: Installed, server: FakeLicenceServer) -> None:
    def change(state: State, _key: object) -> None:
        state.server = server.url

    installed.store.update(change)


def test_a_rebound_seat_is_recorded_and_check_says_so(
    install: Callable[..., Installed], fake_server: FakeLicenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    installed = install()
    served_by(installed, fake_server)
    fake_server.problem(REFRESH, 409, "activation-rebound", REBOUND_DETAIL)
    check = ("check", "--product", "cad-pro", "--version", "5", "--released", "2026-03-01")
    assert run(capsys, *agent_args(installed), *check)[0] == 0

    rc, _, err = run(capsys, *agent_args(installed), "refresh")
    assert (rc, err["code"]) == (1, "activation-rebound")
    rc, out, _ = run(capsys, *agent_args(installed), *check)
    assert (rc, out["code"], out["entitled"]) == (1, "activation-rebound", False)
    assert "activate" in out["detail"]
    _, status, _ = run(capsys, *agent_args(installed), "status")
    assert (status["revoked"], status["code"], status["active"]) == ("activation-rebound",) * 2 + (False,)
    assert status["last_error"]["code"] == "activation-rebound"
    # The old key has nothing more to ask: a second refresh does not reach the server.
    rc, _, err = run(capsys, *agent_args(installed), "refresh")
    assert (rc, err["code"]) == (1, "activation-rebound")
    assert fake_server.asked(REFRESH) == 1


def test_the_daemon_stops_refreshing_a_rebound_seat(
    install: Callable[..., Installed], fake_server: FakeLicenceServer, tmp_path: Path
) -> None:
    installed = install(now=time.time() - 20 * DAY, lease_days=30)  # a refresh is due at once
    served_by(installed, fake_server)
    fake_server.problem(REFRESH, 409, "activation-rebound", REBOUND_DETAIL)
    with running_daemon(installed, tmp_path, server=fake_server.url) as daemon:
        deadline = time.monotonic() + 15
        refresh: dict[str, Any] = {}
        while time.monotonic() < deadline:
            refresh = get(daemon.socket_path, "/v1/status")[1]["daemon"]["refresh"]
            if refresh["stopped"] is not None:
                break
        assert refresh["stopped"] == "activation-rebound", refresh
        assert refresh["next_at"] is None
        status, body = daemon.check()
        assert (status, body["code"]) == (403, "activation-rebound")
        assert fake_server.asked(REFRESH) == 1


def weak_machine(root: Path) -> FakeMachine:
    """A machine where only the machine-id can be read: DMI unreadable, no NIC, no disk."""
    machine = build_machine(root, macs=(), disks=())
    for name in ("product_uuid", "board_serial"):
        (root / f"sys/class/dmi/id/{name}").unlink()
        (root / f"sys/class/dmi/id/{name}").mkdir()  # unreadable, even by root
    return machine


def test_fingerprint_too_weak_from_the_server_says_what_could_not_be_read(
    tmp_path: Path, fake_server: FakeLicenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    machine = weak_machine(tmp_path / "m")
    fake_server.problem("/v1/activations", 422, "fingerprint-too-weak", "1 identifying component, the plan needs 2")
    argv = ["--state-dir", str(tmp_path / "s"), "--sysroot", str(machine.root), "--server", fake_server.url,
            "--jwks", str(tmp_path / "jwks.json")]  # fmt: skip
    rc, _, err = run(capsys, *argv, "activate", "TSR-1", "--product", "cad-pro")
    assert rc == 1 and err["code"] == "fingerprint-too-weak"
    assert "1 identifying component, the plan needs 2" in err["detail"]
    assert err["identifying"] == ["machine-id"]
    reasons = {u["kind"]: u["why"] for u in err["unreadable"]}
    assert set(reasons) == {"dmi-product-uuid", "board-serial", "mac", "disk-serial"}
    assert "product_uuid" in reasons["dmi-product-uuid"] and reasons["dmi-product-uuid"] in err["detail"]
    # The plain-text form names the code and the reasons too.
    assert main([*argv, "activate", "TSR-1", "--product", "cad-pro"]) == 1
    text = capsys.readouterr().err
    assert text.startswith("tessera-agent: fingerprint-too-weak: ") and "no physical network interface" in text


def test_nothing_identifying_is_refused_before_asking_the_server(
    tmp_path: Path, fake_server: FakeLicenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    machine = weak_machine(tmp_path / "m")
    (machine.root / "etc/machine-id").unlink()
    argv = ["--state-dir", str(tmp_path / "s"), "--sysroot", str(machine.root), "--server", fake_server.url]
    rc, _, err = run(capsys, *argv, "activate", "TSR-1", "--product", "cad-pro")
    assert (rc, err["code"], err["identifying"]) == (1, "fingerprint-too-weak", [])
    assert "no server is asked" in err["detail"]
    assert fake_server.requests == []
    rc, _, err = run(capsys, *argv, "offline-request", "TSR-1", "--product", "cad-pro", "--out", str(tmp_path / "r"))
    assert (rc, err["code"]) == (1, "fingerprint-too-weak")
    assert not (tmp_path / "r").exists()


def test_a_copied_one_component_state_matches_no_machine(
    tmp_path: Path,
    install: Callable[..., Installed],
    machine: FakeMachine,
    other_machine: FakeMachine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A machine where nothing identifying could be read got a token (an older server took it)
    whose host is only `virtualisation: none`: the same on every bare-metal machine."""
    empty = FakeMachine(tmp_path / "nothing-readable")
    empty.root.mkdir()
    installed = install(on=empty, tolerance=0)
    assert [c["kind"] for c in _host(installed)["components"]] == ["virtualisation"]
    check = ("check", "--product", "cad-pro", "--version", "5", "--released", "2026-03-01")
    for index, where in enumerate((empty, machine, other_machine)):
        copied = tmp_path / f"copy-{index}"
        shutil.copytree(installed.state_dir, copied)
        argv = ["--state-dir", str(copied), "--jwks", str(installed.jwks), "--sysroot", str(where.root)]
        rc, out, _ = run(capsys, *argv, *check)
        assert (rc, out["code"]) == (1, "host-mismatch"), where.root


def _host(installed: Installed) -> dict[str, Any]:
    from client_agent.util import jws_parts

    host = jws_parts(installed.token)[1]["host"]
    assert isinstance(host, dict)
    return host
