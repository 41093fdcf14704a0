"""Several seats in one state directory (client_agent.seats), and the move of an older agent's
one-seat directory into that layout: done once, atomically, and harmless when it fails."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import (
    DAY,
    FakeLicenceServer,
    FakeMachine,
    Installed,
    Vendor,
    agent_key_for,
    build_one_seat_dir,
    claims_for,
    mode_of,
    put_token,
    seat_store,
)
from test_agent_daemon import get, running_daemon

from client_agent import Checker, seats
from client_agent.cli import main
from client_agent.seats import SeatDirectory, seat_name
from client_agent.state import StateError

RELEASED = "2026-03-01"
CAD, CAM = "cad-pro", "cam-lite"
# Two licences of cad-pro (one whose maintenance ended early) and one of cam-lite.
SEATS = {
    "cad-a": (CAD, "TSR-AAAAA-AAAAA-AAAAA-AAAAA-AAAAA", "2027-01-01T00:00:00Z"),
    "cad-b": (CAD, "TSR-BBBBB-BBBBB-BBBBB-BBBBB-BBBBB", "2026-01-01T00:00:00Z"),
    "cam": (CAM, "TSR-CCCCC-CCCCC-CCCCC-CCCCC-CCCCC", "2027-01-01T00:00:00Z"),
}
LICENCE = {name: f"0b6a4f1e-7a43-4c35-9d43-2f0c3c0c9a1{i}" for i, name in enumerate(SEATS)}
ACTIVATION = {name: f"5f0d7c2a-51b8-4d0e-9a57-b7c1e2b3c4d{i}" for i, name in enumerate(SEATS)}


def mint_for(vendor: Vendor, machine: FakeMachine, state_dir: Path, name: str, *, now: float | None = None) -> str:
    product, licence_key, maint_until = SEATS[name]
    key = agent_key_for(state_dir, product, licence_key)
    claims = claims_for(machine.facts(), key.x, now=now, licence_key=licence_key, product=product,
                        maint_until=maint_until, sub=LICENCE[name], jti=ACTIVATION[name])  # fmt: skip
    return vendor.mint(claims)


def three_seats(
    tmp_path: Path, vendor: Vendor, machine: FakeMachine, *, now: dict[str, float] | None = None, server: str = ""
) -> Path:
    state_dir = tmp_path / "state"
    for name, (product, licence_key, _maint) in SEATS.items():
        token = mint_for(vendor, machine, state_dir, name, now=(now or {}).get(name))
        put_token(state_dir, token, licence_key=licence_key, product=product, licence_id=LICENCE[name],
                  activation_id=ACTIVATION[name], server=server or None)  # fmt: skip
    vendor.write_jwks(tmp_path / "jwks.json")
    return state_dir


def checker(state_dir: Path, machine: FakeMachine, **kw: Any) -> Checker:
    return Checker(state_dir=str(state_dir), jwks=str(state_dir.parent / "jwks.json"), sysroot=str(machine.root), **kw)


def run(capsys: pytest.CaptureFixture[str], state_dir: Path, machine: FakeMachine, *argv: str) -> tuple[int, Any]:
    rc = main(["--state-dir", str(state_dir), "--jwks", str(state_dir.parent / "jwks.json"),
               "--sysroot", str(machine.root), *argv, "--json"])  # fmt: skip
    captured = capsys.readouterr()
    text = captured.out if captured.out.strip() else captured.err
    return rc, json.loads(text.strip().splitlines()[-1])


# ------------------------------------------------------------------ several seats


def test_each_product_and_licence_is_answered_by_its_own_seat(
    tmp_path: Path, vendor: Vendor, machine: FakeMachine
) -> None:
    state_dir = three_seats(tmp_path, vendor, machine)
    check = checker(state_dir, machine)
    assert check.check(CAD, "5.2", RELEASED).code == "entitled"
    assert check.check(CAM, "1.0", RELEASED).code == "entitled"
    refused = check.check("cad-ultimate", "1.0", RELEASED)
    assert refused.code == "wrong-product" and "'cad-pro', 'cam-lite'" in refused.detail

    # Released after licence B's maintenance, before A's: the product runs, under licence A.
    later = "2026-06-01"
    answer = check.check_dict(CAD, "5.3", later)
    assert (answer["code"], answer["licence_id"]) == ("entitled", LICENCE["cad-a"])
    assert check.check(CAD, "5.3", later, licence=LICENCE["cad-b"]).code == "release-not-entitled"
    assert check.check(CAD, "5.3", later, licence=LICENCE["cad-a"]).code == "entitled"
    assert check.check(CAD, "5.3", later, licence=LICENCE["cam"]).code == "no-token"  # not a cad-pro licence

    # One key per seat, each seat's directory private to the agent's user.
    keys = {seat_store(state_dir, product, key).agent_key().x for product, key, _ in SEATS.values()}  # type: ignore[union-attr]
    assert len(keys) == 3
    assert mode_of(state_dir / "seats") == 0o700
    assert all(mode_of(p) == 0o700 for p in (state_dir / "seats").iterdir())


def test_status_lists_every_seat_and_spells_out_the_one_asked_for(
    tmp_path: Path, vendor: Vendor, machine: FakeMachine, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = three_seats(tmp_path, vendor, machine)
    rc, everything = run(capsys, state_dir, machine, "status")
    assert rc == 0 and everything["active"] is True
    assert sorted(s["licence_id"] for s in everything["local_seats"]) == sorted(LICENCE.values())
    assert everything["products"] == [CAD, CAM]
    _, cam = run(capsys, state_dir, machine, "status", "--product", CAM)
    assert (cam["product"], cam["licence_id"], cam["maint_until"]) == (CAM, LICENCE["cam"], "2027-01-01T00:00:00Z")
    _, cad_b = run(capsys, state_dir, machine, "status", "--product", CAD, "--licence", LICENCE["cad-b"])
    assert (cad_b["licence_id"], cad_b["maint_until"]) == (LICENCE["cad-b"], "2026-01-01T00:00:00Z")
    assert all(token not in json.dumps(everything) for token in ("TSR-", '"d"'))  # no licence key, no private key


def test_commands_name_their_seat_and_leave_the_others_alone(
    tmp_path: Path,
    vendor: Vendor,
    machine: FakeMachine,
    fake_server: FakeLicenceServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state_dir = three_seats(tmp_path, vendor, machine, server=fake_server.url)
    fresh = mint_for(vendor, machine, state_dir, "cam")
    fake_server.answers[f"/v1/activations/{ACTIVATION['cam']}/refresh"] = (200, {"token": fresh})
    for name in ("cad-a", "cad-b"):
        fake_server.answers[f"/v1/activations/{ACTIVATION[name]}/deactivate"] = (
            200, {"activation_id": ACTIVATION[name], "ended_at": "2026-12-04T00:00:00Z"},
        )  # fmt: skip

    rc, err = run(capsys, state_dir, machine, "refresh")
    assert (rc, err["code"]) == (1, "seat-ambiguous")
    rc, err = run(capsys, state_dir, machine, "deactivate", "--product", CAD)
    assert (rc, err["code"]) == (1, "seat-ambiguous") and LICENCE["cad-a"] in err["detail"]
    assert fake_server.requests == []  # nothing was asked of the server for an ambiguous command

    rc, refreshed = run(capsys, state_dir, machine, "refresh", "--product", CAM)
    assert rc == 0 and refreshed["activation_id"] == ACTIVATION["cam"]
    assert [path for path, _ in fake_server.requests] == [f"/v1/activations/{ACTIVATION['cam']}/refresh"]

    cad_b_dir = Path(seat_store(state_dir, CAD, SEATS["cad-b"][1]).dir)
    rc, freed = run(capsys, state_dir, machine, "deactivate", "--product", CAD, "--licence", LICENCE["cad-b"])
    assert rc == 0 and (freed["activation_id"], freed["licence_id"]) == (ACTIVATION["cad-b"], LICENCE["cad-b"])
    assert not cad_b_dir.exists()  # its key and token are gone
    check = checker(state_dir, machine)
    assert check.check(CAD, "5.2", RELEASED, licence=LICENCE["cad-b"]).code == "no-token"
    assert check.check(CAD, "5.2", RELEASED).code == "entitled"  # licence A's seat stays
    assert check.check(CAM, "1.0", RELEASED).code == "entitled"
    # Now one cad-pro seat is left: --product alone names it.
    rc, freed = run(capsys, state_dir, machine, "deactivate", "--product", CAD)
    assert rc == 0 and freed["activation_id"] == ACTIVATION["cad-a"]
    assert checker(state_dir, machine).check(CAD, "5.2", RELEASED).code == "wrong-product"  # cam-lite's seat only
    rc, err = run(capsys, state_dir, machine, "refresh", "--product", CAD)
    assert (rc, err["code"]) == (1, "no-token")


def test_a_product_code_that_is_no_directory_name_is_refused(
    tmp_path: Path, machine: FakeMachine, fake_server: FakeLicenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "state"
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    rc, err = run(capsys, state_dir, machine, "--server", fake_server.url, "activate", "TSR-1", "--product", "../x")
    assert (rc, err["code"]) == (1, "invalid-product")
    assert not (tmp_path / "x").exists() and fake_server.requests == []


def test_the_daemon_refreshes_each_seat_on_its_own_schedule(
    tmp_path: Path, vendor: Vendor, machine: FakeMachine, fake_server: FakeLicenceServer
) -> None:
    """Two seats are two-thirds into their lease, one was just refreshed: the daemon asks for
    the two, not the third, and answers for every product while it does."""
    now = time.time()
    old = now - 20 * DAY
    state_dir = three_seats(tmp_path, vendor, machine, now={"cad-a": old, "cam": old, "cad-b": now},
                            server=fake_server.url)  # fmt: skip
    for name in ("cad-a", "cam"):
        fake_server.answers[f"/v1/activations/{ACTIVATION[name]}/refresh"] = (
            200, {"token": mint_for(vendor, machine, state_dir, name)},
        )  # fmt: skip
    installed = Installed(state_dir, tmp_path / "jwks.json", machine, vendor, "", "")
    with running_daemon(installed, tmp_path, server=fake_server.url) as daemon:
        deadline = time.monotonic() + 20
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            info = get(daemon.socket_path, "/v1/status")[1]
            done = [s for s in info["local_seats"] if s["refresh"] and s["refresh"]["last_success"]]
            if len(done) == 2:
                break
            time.sleep(0.1)  # polling the daemon's status, not waiting for it to start
        by_licence = {s["licence_id"]: s for s in info["local_seats"]}
        assert by_licence[LICENCE["cad-a"]]["refresh"]["last_success"] is not None
        assert by_licence[LICENCE["cam"]]["refresh"]["last_success"] is not None
        assert by_licence[LICENCE["cad-b"]]["refresh"]["last_success"] is None
        assert by_licence[LICENCE["cad-b"]]["refresh"]["next_at"] is not None  # due in about 15 days
        assert fake_server.asked(f"/v1/activations/{ACTIVATION['cad-b']}/refresh") == 0
        assert fake_server.asked(f"/v1/activations/{ACTIVATION['cad-a']}/refresh") == 1
        assert fake_server.asked(f"/v1/activations/{ACTIVATION['cam']}/refresh") == 1
        issued = {s["licence_id"]: s["issued_at"] for s in info["local_seats"]}
        assert issued[LICENCE["cad-a"]] >= time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now))  # the new token
        for product, code in ((CAD, 200), (CAM, 200), ("cad-ultimate", 403)):
            assert daemon.check(product)[0] == code
        status, answer = get(daemon.socket_path, f"/v1/check?product={CAD}&version=5.3&released=2026-06-01"
                                                 f"&licence={LICENCE['cad-b']}")  # fmt: skip
        assert (status, answer["code"]) == (403, "release-not-entitled")
        status, one = get(daemon.socket_path, f"/v1/status?product={CAM}")
        assert one["licence_id"] == LICENCE["cam"] and one["daemon"]["refresh"]["failures"] == 0


# ------------------------------------------------------------------ the move of a one-seat directory


def old_files(state_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(state_dir.iterdir()) if p.is_file()}


def test_a_one_seat_directory_moves_in_place_on_first_use(
    tmp_path: Path, vendor: Vendor, machine: FakeMachine, capsys: pytest.CaptureFixture[str]
) -> None:
    old = build_one_seat_dir(tmp_path / "state", vendor, machine)
    before = old_files(old.state_dir)

    # A reader without write access answers from the old layout and moves nothing.
    assert checker(old.state_dir, machine, persist=False).check(CAD, "5.2", RELEASED).code == "entitled"
    assert old_files(old.state_dir) == before and not (old.state_dir / "seats").exists()

    rc, status = run(capsys, old.state_dir, machine, "status")
    assert rc == 0 and status["active"] is True and "migration_error" not in status
    seat_dir = old.state_dir / "seats" / seat_name(CAD, seats_salt(old.licence_key))
    assert status["seat"] == seat_dir.name
    # Moved, not rewritten: the signed state and the key are the same bytes; the clock stays put.
    assert (seat_dir / "state.json").read_bytes() == before["state.json"]
    assert (seat_dir / "agent.key").read_bytes() == before["agent.key"]
    assert {"state.json", "agent.key"}.isdisjoint(old_files(old.state_dir))
    assert old_files(old.state_dir)["clock.key"] == before["clock.key"]
    assert mode_of(seat_dir) == 0o700 and mode_of(seat_dir / "state.json") == 0o600
    assert checker(old.state_dir, machine).check(CAD, "5.2", RELEASED).code == "entitled"
    assert [p.name for p in (old.state_dir / "seats").iterdir()] == [seat_dir.name]  # no temp left


def test_the_rollback_guard_survives_the_move(tmp_path: Path, vendor: Vendor, machine: FakeMachine) -> None:
    """The old agent saw a time two days ahead; the clock is now "set back" to the real one."""
    ahead = int(time.time()) + 2 * DAY
    old = build_one_seat_dir(tmp_path / "state", vendor, machine, now=time.time() - DAY, high_water=ahead)
    assert checker(old.state_dir, machine, persist=False).check(CAD, "5.2", RELEASED).code == "clock-rollback"
    moving = checker(old.state_dir, machine)
    assert moving.check(CAD, "5.2", RELEASED).code == "clock-rollback"
    assert SeatDirectory(str(old.state_dir)).names() and not (old.state_dir / "state.json").exists()
    status = checker(old.state_dir, machine).status()
    assert status["high_water"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ahead))


def seats_salt(licence_key: str) -> str:
    from client_agent.fingerprint import licence_salt

    return licence_salt(licence_key)


def test_a_move_that_cannot_start_leaves_the_old_seat_answering(
    tmp_path: Path,
    vendor: Vendor,
    machine: FakeMachine,
    fake_server: FakeLicenceServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = build_one_seat_dir(tmp_path / "state", vendor, machine)
    (old.state_dir / "seats").write_text("in the way\n")  # a file where the seats directory must go
    before = old_files(old.state_dir)

    check = ("check", "--product", CAD, "--version", "5.2", "--released", RELEASED)
    rc, answer = run(capsys, old.state_dir, machine, *check)
    assert (rc, answer["code"]) == (0, "entitled")
    rc, status = run(capsys, old.state_dir, machine, "status")
    assert status["active"] is True and status["migration_error"]["code"] == "state-migration-failed"
    assert "unchanged" in status["migration_error"]["detail"]
    # A second seat needs the new layout: refused with the reason, before any server is asked.
    rc, err = run(capsys, old.state_dir, machine, "--server", fake_server.url, "activate", "TSR-2", "--product", CAM)
    assert (rc, err["code"]) == (1, "state-migration-failed") and fake_server.requests == []
    assert old_files(old.state_dir) == before

    (old.state_dir / "seats").unlink()  # the administrator removes the obstacle
    rc, answer = run(capsys, old.state_dir, machine, *check)
    assert (rc, answer["code"]) == (0, "entitled")
    assert len(SeatDirectory(str(old.state_dir)).names()) == 1 and not (old.state_dir / "state.json").exists()


@pytest.mark.parametrize("where", ["copying-the-state", "committing"])
def test_a_move_cut_short_midway_changes_nothing(
    tmp_path: Path, vendor: Vendor, machine: FakeMachine, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    old = build_one_seat_dir(tmp_path / "state", vendor, machine)
    before = old_files(old.state_dir)
    real_write, real_rename = seats.atomic_write, os.rename

    def disk_full(path: str, data: bytes, mode: int = 0o600) -> None:
        if path.endswith("state.json"):  # the key is already copied
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data, mode)

    def refused(src: str, dst: str) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    if where == "copying-the-state":
        monkeypatch.setattr(seats, "atomic_write", disk_full)
    else:
        monkeypatch.setattr(seats.os, "rename", refused)
    with pytest.raises(StateError) as failed:
        SeatDirectory(str(old.state_dir)).migrate()
    assert failed.value.code == "state-migration-failed"
    assert old_files(old.state_dir) == before  # the old state is untouched
    assert SeatDirectory(str(old.state_dir)).names() == []  # the half-built copy is no seat
    persisting = checker(old.state_dir, machine)
    assert persisting.check(CAD, "5.2", RELEASED).code == "entitled"  # tries the move again, fails, answers
    assert persisting.migration_error is not None

    monkeypatch.setattr(seats, "atomic_write", real_write)
    monkeypatch.setattr(seats.os, "rename", real_rename)
    assert checker(old.state_dir, machine).check(CAD, "5.2", RELEASED).code == "entitled"
    assert [p.name for p in (old.state_dir / "seats").iterdir()] == SeatDirectory(str(old.state_dir)).names()
    assert not (old.state_dir / "state.json").exists()


def test_a_move_interrupted_after_its_commit_is_finished_on_next_use(
    tmp_path: Path, vendor: Vendor, machine: FakeMachine
) -> None:
    old = build_one_seat_dir(tmp_path / "state", vendor, machine)
    before = old_files(old.state_dir)
    SeatDirectory(str(old.state_dir)).migrate()
    for name in ("state.json", "agent.key"):  # as if the power went after the rename, before the clean-up
        (old.state_dir / name).write_bytes(before[name])
    directory = SeatDirectory(str(old.state_dir))
    assert len(directory.seats()) == 1  # the copy is the seat; the leftover is not a second one
    assert checker(old.state_dir, machine, persist=False).check(CAD, "5.2", RELEASED).code == "entitled"
    directory.migrate()
    assert {"state.json", "agent.key"}.isdisjoint(old_files(old.state_dir)) and len(directory.seats()) == 1


def test_a_one_seat_state_that_does_not_verify_is_not_moved(
    tmp_path: Path, vendor: Vendor, machine: FakeMachine
) -> None:
    old = build_one_seat_dir(tmp_path / "state", vendor, machine)
    document = json.loads((old.state_dir / "state.json").read_text())
    document["body"]["licence_id"] = "someone-else"
    (old.state_dir / "state.json").write_text(json.dumps(document))
    before = old_files(old.state_dir)
    check = checker(old.state_dir, machine)
    assert check.check(CAD, "5.2", RELEASED).code == "state-tampered"
    assert check.migration_error is not None and check.migration_error.code == "state-tampered"
    assert old_files(old.state_dir) == before and SeatDirectory(str(old.state_dir)).names() == []


def test_an_offline_answer_finds_the_seat_whose_request_it_answers(
    tmp_path: Path, vendor: Vendor, machine: FakeMachine, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = three_seats(tmp_path, vendor, machine)
    (tmp_path / "jwks.json").write_text(json.dumps(vendor.jwks()))
    rc, _ = run(capsys, state_dir, machine, "offline-request", "TSR-DDDDD-DDDDD-DDDDD-DDDDD-DDDDD",
                "--product", "nest-plus", "--out", str(tmp_path / "req.json"))  # fmt: skip
    assert rc == 0
    nest_key = "TSR-DDDDD-DDDDD-DDDDD-DDDDD-DDDDD"
    key = seat_store(state_dir, "nest-plus", nest_key).agent_key()
    assert key is not None
    nest = {"sub": "0b6a4f1e-7a43-4c35-9d43-2f0c3c0c9a19", "jti": "5f0d7c2a-51b8-4d0e-9a57-b7c1e2b3c4d9"}
    claims = claims_for(machine.facts(), key.x, licence_key=nest_key, product="nest-plus", **nest)
    (tmp_path / "answer.json").write_text(json.dumps({"token": vendor.mint(claims)}))
    rc, installed = run(capsys, state_dir, machine, "offline-install", str(tmp_path / "answer.json"))
    assert rc == 0 and installed["product"] == "nest-plus"
    check = checker(state_dir, machine)
    assert [check.check(p, "1", RELEASED).code for p in (CAD, CAM, "nest-plus")] == ["entitled"] * 3
    rc, written = run(capsys, state_dir, machine, "offline-deactivate", "--product", "nest-plus",
                      "--out", str(tmp_path / "proof.json"))  # fmt: skip
    assert rc == 0 and written["activation_id"] == nest["jti"]
    assert checker(state_dir, machine).check("nest-plus", "1", RELEASED).code == "wrong-product"
    assert checker(state_dir, machine).check(CAM, "1", RELEASED).code == "entitled"


def test_a_failed_activation_adds_no_product(
    tmp_path: Path,
    vendor: Vendor,
    machine: FakeMachine,
    fake_server: FakeLicenceServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The seat's key is made before the server answers (a transfer request needs it kept), but a
    seat without a token is not a product this agent holds."""
    state_dir = tmp_path / "state"
    vendor.write_jwks(tmp_path / "jwks.json")
    fake_server.problem("/v1/activations", 404, "licence-not-found", "no such licence")
    rc, err = run(capsys, state_dir, machine, "--server", fake_server.url, "activate", "TSR-9", "--product", CAM)
    assert (rc, err["code"]) == (1, "licence-not-found")
    assert checker(state_dir, machine).check(CAD, "5.2", RELEASED).code == "no-token"
    assert checker(state_dir, machine).check(CAM, "5.2", RELEASED).code == "no-token"
    token = mint_for(vendor, machine, state_dir, "cad-a")
    put_token(state_dir, token, licence_key=SEATS["cad-a"][1], product=CAD, licence_id=LICENCE["cad-a"])
    assert checker(state_dir, machine).check(CAD, "5.2", RELEASED).code == "entitled"
    refused = checker(state_dir, machine).check(CAM, "5.2", RELEASED)
    assert refused.code == "no-token"  # its own seat answers: nothing installed there yet
    assert checker(state_dir, machine).check("nest-plus", "1", RELEASED).detail.endswith("not of 'nest-plus'")


def test_a_checker_that_outlives_a_seat_does_not_bring_it_back(
    tmp_path: Path, vendor: Vendor, machine: FakeMachine
) -> None:
    """A seat's checker, listed just before the seat was deactivated elsewhere, writes the clock mark
    now and then: that must not make the seat's directory and a key again."""
    from datetime import UTC, datetime, timedelta

    state_dir = three_seats(tmp_path, vendor, machine)
    (seat, held), *_ = [(s, c) for s, c in checker(state_dir, machine).seat_checkers() if s.product == CAM]
    assert held.check(CAM, "1.0", RELEASED).code == "entitled"
    SeatDirectory(str(state_dir)).remove(seat.store)  # what `deactivate --product cam-lite` does after the server
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert held.check(CAM, "1.0", RELEASED, now=later).code == "no-token"
    held.observe_time(now=later + timedelta(minutes=5))
    assert not os.path.exists(seat.store.dir)
    assert checker(state_dir, machine).check(CAM, "1.0", RELEASED).code == "wrong-product"
