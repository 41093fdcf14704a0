"""One seat is one machine, end to end: the real agent CLI on fake machines against the real server.

A copied state directory, a machine that shows nothing identifying, and an OS reinstall (a new
machine-id and a new agent key on the same hardware), as a customer would meet them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from agent_fakes import FakeMachine, build_machine
from test_e2e_agent import RELEASES, Agent, seats_in_use

from tests.conftest import LiveServer, issue_demo_licence


def test_a_copied_state_directory_runs_only_on_its_own_machine(
    live_server: LiveServer, machine: FakeMachine, other_machine: FakeMachine, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, model="host-id", seats=1, released_versions=RELEASES)
    product = licence["product"]
    a = Agent(live_server, machine, tmp_path / "state-a")
    a.run("activate", licence["key"], "--product", product)
    shutil.copytree(tmp_path / "state-a", tmp_path / "state-b")
    b = Agent(live_server, other_machine, tmp_path / "state-b")
    assert b.check(product) == "host-mismatch"  # offline: the token names machine A
    # Online, the copy's agent key belongs to A's seat, but this machine is not A: a transfer, not a seat.
    _, _, refused = b.run("activate", licence["key"], "--product", product, ok=False)
    assert refused["code"] == "transfer-required"
    assert a.check(product) == "entitled"
    a.run("refresh")
    assert seats_in_use(live_server, licence["id"]) == 1


def test_a_machine_that_shows_nothing_identifying_gets_no_seat(
    live_server: LiveServer, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, seats=5, released_versions=RELEASES)
    product = licence["product"]
    # A container that hides the machine: no machine-id, no DMI, no NIC, no disk serial.
    bare = FakeMachine(tmp_path / "bare")
    bare.write("proc/cpuinfo", "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\n\n")
    bare.write("proc/1/cgroup", "0::/init.scope\n")
    _, _, local = Agent(live_server, bare, tmp_path / "state-bare").run(
        "activate", licence["key"], "--product", product, ok=False
    )
    assert local["code"] == "fingerprint-too-weak"
    # One identifying component: the server refuses (the plan asks for two) and the agent says what it missed.
    thin = FakeMachine(tmp_path / "thin")
    thin.write("etc/machine-id", "0123456789abcdef0123456789abcdef\n")
    thin.write("proc/cpuinfo", "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\n\n")
    _, _, server = Agent(live_server, thin, tmp_path / "state-thin").run(
        "activate", licence["key"], "--product", product, ok=False
    )
    assert server["code"] == "fingerprint-too-weak" and server["identifying"] == ["machine-id"]
    assert "at least 2" in server["detail"]
    assert {u["kind"] for u in server["unreadable"]} == {"dmi-product-uuid", "board-serial", "mac", "disk-serial"}
    assert seats_in_use(live_server, licence["id"]) == 0


def test_an_os_reinstall_keeps_the_seat_and_the_old_installation_is_told(
    live_server: LiveServer, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, seats=1, released_versions=RELEASES)
    product = licence["product"]
    machine = build_machine(tmp_path / "ws")
    before = Agent(live_server, machine, tmp_path / "state-before")
    _, first, _ = before.run("activate", licence["key"], "--product", product)
    # The reinstall: a new machine-id and a fresh agent state (a new agent key); the hardware is the same.
    machine.write("etc/machine-id", "ffffffffffffffffffffffffffffffff\n")
    after = Agent(live_server, machine, tmp_path / "state-after")
    _, again, _ = after.run("activate", licence["key"], "--product", product)
    assert again["activation_id"] == first["activation_id"]
    assert after.check(product) == "entitled"
    assert seats_in_use(live_server, licence["id"]) == 1
    # An old copy of the previous installation (a restored backup) is told, and stops asking.
    _, _, told = before.run("refresh", ok=False)
    assert told["code"] == "activation-rebound"
    assert before.check(product) == "activation-rebound"
    events = live_server.admin("audit", "list", "--subject", f"activation:{first['activation_id']}")
    assert [e["details"]["proven"] for e in events if e["action"] == "seat.rebind"] == [False]
