"""End to end: the real `tessera-agent` CLI against the real server process.

Only the hardware (fake sysroots) and, for rollback, the clock are faked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import FakeMachine, Vendor, claims_for, put_token, seat_store
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_agent import Checker
from client_agent.state import State
from tests.conftest import LiveServer, issue_demo_licence

AGENT = [sys.executable, "-m", "client_agent.cli"]
RELEASES = (("1.0", date(2025, 1, 15)), ("2.0", date(2026, 6, 1)))


class Agent:
    """One fake machine with its own agent state directory."""

    def __init__(self, server: LiveServer, machine: FakeMachine, state_dir: Path) -> None:
        self.server, self.machine, self.state_dir = server, machine, state_dir

    def env(self) -> dict[str, str]:
        return os.environ | {
            "TESSERA_AGENT_STATE_DIR": str(self.state_dir),
            "TESSERA_AGENT_SYSROOT": str(self.machine.root),
            "TESSERA_AGENT_JWKS": str(self.server.jwks_path),
            "TESSERA_AGENT_SERVER": self.server.url,
        }

    def run(self, *args: str, ok: bool | None = True) -> tuple[int, Any, Any]:
        done = subprocess.run([*AGENT, *args, "--json"], env=self.env(), capture_output=True, text=True, timeout=60)
        out = json.loads(done.stdout) if done.stdout.strip() else None
        err = json.loads(done.stderr.strip().splitlines()[-1]) if done.stderr.strip() else None
        if ok is True:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        elif ok is False:
            assert done.returncode != 0, (args, done.stdout, done.stderr)
        return done.returncode, out, err

    def check(self, product: str, released: str = "2025-01-15", version: str = "1.0") -> str:
        code, out, err = self.run("check", "--product", product, "--version", version, "--released", released, ok=None)
        assert out is not None, err
        assert (code == 0) == (out["code"] == "entitled")
        return str(out["code"])

    def checker(self) -> Checker:
        return Checker(state_dir=str(self.state_dir), jwks=str(self.server.jwks_path), sysroot=str(self.machine.root))


@pytest.fixture
def machine_a(machine: FakeMachine) -> FakeMachine:
    return machine


@pytest.fixture
def machine_b(other_machine: FakeMachine) -> FakeMachine:
    return other_machine


def seats_in_use(server: LiveServer, licence_id: str) -> int:
    """Active seats as the vendor's admin CLI reports them."""
    return int(server.admin("licence", "show", licence_id)["seats_in_use"])


def test_activate_check_offline_deactivate_and_move(
    live_server: LiveServer, machine_a: FakeMachine, machine_b: FakeMachine, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, seats=1, released_versions=RELEASES)
    product = licence["product"]
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    b = Agent(live_server, machine_b, tmp_path / "state-b")

    _, activated, _ = a.run("activate", licence["key"], "--product", product)
    assert activated["product"] == product
    key_file = Path(seat_store(a.state_dir).key_path)
    assert key_file.stat().st_mode & 0o777 == 0o600
    first_key = json.loads(key_file.read_text())["x"]
    assert seats_in_use(live_server, licence["id"]) == 1

    # One seat: the second machine is refused while A holds it.
    _, _, refused = b.run("activate", licence["key"], "--product", product, ok=False)
    assert refused["code"] == "seats-exhausted"

    live_server.stop()
    try:
        assert a.check(product) == "entitled"  # offline, from the cached token
        _, status, _ = a.run("status")
        assert status["active"] is True and status["lease_expires"]
        _, _, unreachable = a.run("refresh", ok=False)
        assert unreachable["code"] == "server-unreachable"
        assert a.check(product) == "entitled"  # a failed refresh does not lose the seat
    finally:
        live_server.start()

    a.run("refresh")
    assert a.check(product) == "entitled"
    _, deactivated, _ = a.run("deactivate")
    assert deactivated["activation_id"] == activated["activation_id"]
    assert a.check(product) == "no-token"
    assert seats_in_use(live_server, licence["id"]) == 0
    assert first_key and not key_file.exists()  # the seat's key is gone: the old key signs nothing more

    b.run("activate", licence["key"], "--product", product)
    assert b.check(product) == "entitled"
    assert seats_in_use(live_server, licence["id"]) == 1


def test_reactivating_the_same_host_reuses_the_seat(
    live_server: LiveServer, machine_a: FakeMachine, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, seats=1, released_versions=RELEASES)
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    _, first, _ = a.run("activate", licence["key"], "--product", licence["product"])
    _, again, _ = a.run("activate", licence["key"], "--product", licence["product"])
    assert again["activation_id"] == first["activation_id"]
    assert a.check(licence["product"]) == "entitled"


def test_token_copied_to_another_machine_is_host_mismatch(
    live_server: LiveServer, machine_a: FakeMachine, machine_b: FakeMachine, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, released_versions=RELEASES)
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    a.run("activate", licence["key"], "--product", licence["product"])
    shutil.copytree(tmp_path / "state-a", tmp_path / "state-copied")
    copied = Agent(live_server, machine_b, tmp_path / "state-copied")
    assert copied.check(licence["product"]) == "host-mismatch"
    assert a.check(licence["product"]) == "entitled"


def test_a_replaced_nic_stays_within_tolerance(live_server: LiveServer, machine_a: FakeMachine, tmp_path: Path) -> None:
    licence = issue_demo_licence(live_server, tolerance=1, released_versions=RELEASES)
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    a.run("activate", licence["key"], "--product", licence["product"])
    machine_a.remove_nic("eth0")
    machine_a.add_nic("eth0", "00:1b:21:99:88:77")
    assert a.check(licence["product"]) == "entitled"
    machine_a.write("sys/class/dmi/id/board_serial", "NEW-BOARD\n")
    assert a.check(licence["product"]) == "host-mismatch"


def test_clock_set_back_is_clock_rollback(live_server: LiveServer, machine_a: FakeMachine, tmp_path: Path) -> None:
    licence = issue_demo_licence(live_server, released_versions=RELEASES)
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    a.run("activate", licence["key"], "--product", licence["product"])
    now = datetime.now(UTC)
    checker = a.checker()
    assert checker.check(licence["product"], "1.0", "2025-01-15", now=now).code == "entitled"
    assert checker.check(licence["product"], "1.0", "2025-01-15", now=now - timedelta(days=2)).code == "clock-rollback"

    # The agent saw a later time (its clock ran ahead, then was set back): the CLI refuses too.
    def saw_the_future(state: State, _key: object) -> None:
        state.high_water = int((now + timedelta(days=3)).timestamp())

    seat_store(a.state_dir).update(saw_the_future)
    assert a.check(licence["product"]) == "clock-rollback"


def test_release_dates_against_maint_until(live_server: LiveServer, machine_a: FakeMachine, tmp_path: Path) -> None:
    licence = issue_demo_licence(live_server, released_versions=RELEASES)
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    a.run("activate", licence["key"], "--product", licence["product"])
    _, status, _ = a.run("status")
    maint_until = datetime.fromisoformat(status["maint_until"])
    before = (maint_until - timedelta(days=1)).date().isoformat()
    after = (maint_until + timedelta(days=1)).date().isoformat()
    assert a.check(licence["product"], released=before, version="3.0") == "entitled"
    assert a.check(licence["product"], released=after, version="9.0") == "release-not-entitled"


def test_tampered_token_byte_is_bad_signature(live_server: LiveServer, machine_a: FakeMachine, tmp_path: Path) -> None:
    licence = issue_demo_licence(live_server, released_versions=RELEASES)
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    a.run("activate", licence["key"], "--product", licence["product"])
    store = seat_store(a.state_dir)
    token = store.load().state.token
    assert token is not None
    head, body, sig = token.split(".")
    flipped = "B" if body[10] == "A" else "A"
    put_token(a.state_dir, f"{head}.{body[:10]}{flipped}{body[11:]}.{sig}", server=live_server.url,
              product=licence["product"])  # fmt: skip
    assert a.check(licence["product"]) == "bad-signature"


def test_token_signed_by_an_unknown_key_is_refused(
    live_server: LiveServer, machine_a: FakeMachine, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, released_versions=RELEASES)
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    a.run("activate", licence["key"], "--product", licence["product"])
    key = seat_store(a.state_dir).agent_key()
    assert key is not None
    forger = Vendor(kid="forged", key=Ed25519PrivateKey.generate())
    forged = forger.mint(
        claims_for(machine_a.facts(), key.x, product=licence["product"], maint_until="2099-01-01T00:00:00Z")
    )
    put_token(a.state_dir, forged, server=live_server.url, product=licence["product"])
    assert a.check(licence["product"]) == "bad-signature"
    # Reusing a trusted kid does not help a forger either.
    kid = json.loads(Path(live_server.jwks_path).read_text())["keys"][0]["kid"]
    same_kid = forger.mint(claims_for(machine_a.facts(), key.x, product=licence["product"]), kid=kid)
    put_token(a.state_dir, same_kid, server=live_server.url, product=licence["product"])
    assert a.check(licence["product"]) == "bad-signature"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]), id="half-written"),
        pytest.param(lambda p: p.write_bytes(b"\x00" * 64), id="zeroed"),
    ],
)
def test_corrupt_state_is_a_clear_error(
    live_server: LiveServer, machine_a: FakeMachine, tmp_path: Path, damage: Any
) -> None:
    licence = issue_demo_licence(live_server, released_versions=RELEASES)
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    a.run("activate", licence["key"], "--product", licence["product"])
    damage(Path(seat_store(a.state_dir).state_path))
    assert a.check(licence["product"]) == "state-corrupt"
    _, status, _ = a.run("status")
    assert status["code"] == "state-corrupt" and status["active"] is False
    _, _, err = a.run("refresh", ok=False)
    assert err["code"] == "state-corrupt" and "state.json" in err["detail"]


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_offline_activation_round_trip(
    live_server: LiveServer, machine_a: FakeMachine, machine_b: FakeMachine, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, seats=1, released_versions=RELEASES)
    product = licence["product"]
    air = Agent(live_server, machine_a, tmp_path / "air-gapped")
    request_file, answer_file, proof_file = (
        tmp_path / "req.json",
        tmp_path / "answer.json",
        tmp_path / "proof.json",
    )

    air.run("offline-request", licence["key"], "--product", product, "--out", str(request_file))
    assert licence["key"] not in json.dumps(air.run("status")[1])
    # Any connected machine uploads it: plain HTTP, as documented ...
    status, answer = _post(live_server.url + "/v1/offline/activations", json.loads(request_file.read_text()))
    assert status in (200, 201), answer
    answer_file.write_text(json.dumps(answer))

    air.run("offline-install", str(answer_file))
    assert air.check(product) == "entitled"

    other = Agent(live_server, machine_b, tmp_path / "online-b")
    _, _, refused = other.run("activate", licence["key"], "--product", product, ok=False)
    assert refused["code"] == "seats-exhausted"

    air.run("offline-deactivate", "--out", str(proof_file))
    assert air.check(product) == "no-token"
    assert not (tmp_path / "air-gapped/agent.key.next").exists()
    connected = Agent(live_server, machine_b, tmp_path / "connected")
    _, freed, _ = connected.run("offline-submit", str(proof_file))
    assert freed["activation_id"]
    other.run("activate", licence["key"], "--product", product)
    assert other.check(product) == "entitled"


def test_a_replayed_offline_request_cannot_retake_a_freed_seat(
    live_server: LiveServer, machine_a: FakeMachine, machine_b: FakeMachine, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, seats=1, released_versions=RELEASES)
    product = licence["product"]
    air = Agent(live_server, machine_a, tmp_path / "air-gapped")
    air.run("offline-request", licence["key"], "--product", product, "--out", str(tmp_path / "req.json"))
    request = json.loads((tmp_path / "req.json").read_text())
    status, answer = _post(live_server.url + "/v1/offline/activations", request)
    assert status in (200, 201), answer
    (tmp_path / "answer.json").write_text(json.dumps(answer))
    air.run("offline-install", str(tmp_path / "answer.json"))
    air.run("offline-deactivate", "--out", str(tmp_path / "proof.json"))
    status, _ = _post(live_server.url + "/v1/offline/deactivations", json.loads((tmp_path / "proof.json").read_text()))
    assert status == 200
    # Whoever kept a copy of the old request file replays it: the nonce was spent.
    status, replay = _post(live_server.url + "/v1/offline/activations", request)
    assert status == 409 and replay["code"] == "replayed-request", (status, replay)
    other = Agent(live_server, machine_b, tmp_path / "b")
    other.run("activate", licence["key"], "--product", product)


def test_offline_submit_helper_writes_the_answer(
    live_server: LiveServer, machine_a: FakeMachine, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, released_versions=RELEASES)
    air = Agent(live_server, machine_a, tmp_path / "air-gapped")
    air.run(
        "offline-request",
        licence["key"],
        "--product",
        licence["product"],
        "--out",
        str(tmp_path / "req.json"),
    )
    helper = Agent(live_server, machine_a, tmp_path / "helper")
    helper.run("offline-submit", str(tmp_path / "req.json"), "--out", str(tmp_path / "answer.json"))
    air.run("offline-install", str(tmp_path / "answer.json"))
    assert air.check(licence["product"]) == "entitled"
    # An answer meant for another agent key is not installed.
    other = Agent(live_server, machine_a, tmp_path / "other")
    other.run("offline-request", licence["key"], "--product", licence["product"], "--out", str(tmp_path / "r2.json"))
    _, _, err = other.run("offline-install", str(tmp_path / "answer.json"), ok=False)
    assert err["code"] == "token-mismatch"


def test_unknown_licence_key_is_refused_by_the_server(
    live_server: LiveServer, machine_a: FakeMachine, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, released_versions=RELEASES)
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    _, _, err = a.run("activate", "TSR-00000-00000-00000-00000-00000", "--product", licence["product"], ok=False)
    assert err["code"] == "licence-not-found"
    assert a.check(licence["product"]) == "no-token"


def test_a_revoked_licence_stops_at_the_next_refresh(
    live_server: LiveServer, machine_a: FakeMachine, tmp_path: Path
) -> None:
    licence = issue_demo_licence(live_server, released_versions=RELEASES)
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    a.run("activate", licence["key"], "--product", licence["product"])
    live_server.admin("licence", "revoke", licence["id"])
    assert a.check(licence["product"]) == "entitled"  # offline, the agent cannot know yet
    _, _, err = a.run("refresh", ok=False)
    assert err["code"] in ("licence-revoked", "activation-ended")
    assert a.check(licence["product"]) == "revoked"
    _, status, _ = a.run("status")
    assert status["revoked"] == err["code"]


def test_dongle_licence(live_server: LiveServer, machine_a: FakeMachine, tmp_path: Path) -> None:
    licence = issue_demo_licence(
        live_server, model="dongle", released_versions=RELEASES, plan_options=("--dongle-usb-id", "20a0:4108")
    )
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    _, _, err = a.run("activate", licence["key"], "--product", licence["product"], "--dongle", "20a0:4108", ok=False)
    assert err["code"] == "dongle-missing"  # nothing plugged in yet
    machine_a.plug_dongle("1-1.2", "20a0", "4108", "DNG-000123")
    a.run("activate", licence["key"], "--product", licence["product"], "--dongle", "20a0:4108")
    assert a.check(licence["product"]) == "entitled"
    machine_a.unplug("1-1.2")
    assert a.check(licence["product"]) == "dongle-missing"
    machine_a.plug_dongle("1-3", "20a0", "4108", "DNG-000123")
    assert a.check(licence["product"]) == "entitled"

    # Support records the dongle stolen: the agent learns it from the vendor's signed list on refresh.
    activation = a.run("status")[1]["activation_id"]
    replaced = live_server.admin("dongle", "replace", activation, "--reason", "stolen", "--new-serial", "DNG-000999")
    assert replaced["charge"] == "free"  # maintenance is active
    _, _, ended = a.run("refresh", ok=False)
    assert ended["code"] == "activation-ended"
    assert a.check(licence["product"]) == "dongle-revoked"


def test_host_id_seat_moves_by_an_approved_transfer(
    live_server: LiveServer, machine_a: FakeMachine, machine_b: FakeMachine, tmp_path: Path
) -> None:
    """A host-ID seat: the new machine's agent asks (as a named contact), support approves,
    the new machine activates, and the old machine's next refresh is refused."""
    licence = issue_demo_licence(live_server, model="host-id", seats=1, released_versions=RELEASES)
    product = licence["product"]
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    b = Agent(live_server, machine_b, tmp_path / "state-b")
    a.run("activate", licence["key"], "--product", product)
    _, _, refused = b.run("activate", licence["key"], "--product", product, ok=False)
    assert refused["code"] == "transfer-required"
    _, _, refused = a.run("deactivate", ok=False)
    assert refused["code"] == "wrong-binding-model"  # a bound seat does not move by itself

    customer = live_server.admin("licence", "show", licence["id"])["customer"]
    people = [live_server.admin("user", "add", customer, "--name", n, "--email", f"{n}@{licence['id'][:8]}.test",
                                "--role", "customer-admin") for n in ("sam", "dee")]  # fmt: skip
    live_server.admin(
        "contacts", "set", customer, "--system-administrator", people[0]["id"], "--deputy", people[1]["id"]
    )
    token_file = tmp_path / "token"
    token_file.write_text(people[1]["token"] + "\n")
    token_file.chmod(0o600)

    _, _, missing = b.run("transfer-request", licence["key"], "--product", product, "--reason", "defect", ok=False)
    assert missing["code"] == "api-token-missing"
    _, asked, _ = b.run("transfer-request", licence["key"], "--product", product, "--reason", "defect",
                        "--api-token-file", str(token_file))  # fmt: skip
    assert asked["state"] == "pending"
    decided = live_server.admin("transfer", "approve", asked["id"], "--note", "mainboard replaced")
    assert decided["charge"] == "free"

    b.run("activate", licence["key"], "--product", product)
    assert b.check(product) == "entitled"
    _, _, ended = a.run("refresh", ok=False)
    assert ended["code"] == "activation-ended"
    assert seats_in_use(live_server, licence["id"]) == 1


def test_restoring_an_old_state_file_is_still_clock_rollback(
    live_server: LiveServer, machine_a: FakeMachine, tmp_path: Path
) -> None:
    """The customer keeps a copy of state.json, lets the agent see a later time, restores the copy
    and sets the clock back: the mark kept beside the state (and elsewhere) still says later."""
    licence = issue_demo_licence(live_server, released_versions=RELEASES)
    a = Agent(live_server, machine_a, tmp_path / "state-a")
    a.run("activate", licence["key"], "--product", licence["product"])
    saved = (Path(seat_store(a.state_dir).state_path)).read_bytes()
    later = datetime.now(UTC) + timedelta(days=3)
    assert a.checker().check(licence["product"], "1.0", "2025-01-15", now=later).code == "entitled"
    (Path(seat_store(a.state_dir).state_path)).write_bytes(saved)
    assert a.check(licence["product"]) == "clock-rollback"  # the real clock is now "set back" by 3 days
    _, status, _ = a.run("status")
    assert status["high_water"] == later.strftime("%Y-%m-%dT%H:%M:%SZ")
