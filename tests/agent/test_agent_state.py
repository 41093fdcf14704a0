import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agent_fakes import FakeMachine, Installed, agent_key_for, b64u, mode_of, seat_store
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_agent import Checker
from client_agent.state import State, StateError, StateStore


def write_token(store: StateStore, token: str = "t.o.k", high_water: int = 1_790_000_000) -> None:
    def change(state: State, _key: object) -> None:
        state.token = token
        state.high_water = high_water

    store.update(change)


def test_round_trip_and_modes(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "state"))
    write_token(store)
    loaded = store.load()
    assert loaded.state.token == "t.o.k"
    assert loaded.state.high_water == 1_790_000_000
    assert mode_of(tmp_path / "state/state.json") == 0o600
    assert mode_of(tmp_path / "state/agent.key") == 0o600
    assert mode_of(tmp_path / "state") == 0o700
    assert mode_of(tmp_path / "state/clock.key") == 0o600
    assert mode_of(tmp_path / "state/clock.mark") == 0o600
    assert sorted(os.listdir(tmp_path / "state")) == [
        "agent.key",
        "clock.key",
        "clock.mark",
        "state.json",
        "state.lock",
    ]  # no temp files left


def test_modes_ignore_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_token(StateStore(str(tmp_path / "s")))
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "s/state.json") == 0o600


def test_no_state_is_an_empty_state(tmp_path: Path) -> None:
    loaded = StateStore(str(tmp_path / "nothing")).load()
    assert loaded.state.token is None and loaded.agent_x is None


def _edit_body(path: Path, **changes: object) -> None:
    document = json.loads(path.read_text())
    document["body"].update(changes)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        pytest.param(
            lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
            "state-corrupt",
            id="half-written",
        ),
        pytest.param(lambda p: p.write_bytes(b""), "state-corrupt", id="empty"),
        pytest.param(lambda p: p.write_bytes(b"\x00\xff\xfe garbage"), "state-corrupt", id="binary-garbage"),
        pytest.param(lambda p: p.write_text("[]"), "state-corrupt", id="wrong-json-shape"),
        pytest.param(
            lambda p: p.write_text('{"format": "x", "body": {}, "sig": ""}'),
            "state-corrupt",
            id="wrong-format",
        ),
        pytest.param(lambda p: _edit_body(p, high_water=0), "state-tampered", id="high-water-reset"),
        pytest.param(lambda p: _edit_body(p, token="other.to.ken"), "state-tampered", id="token-swapped"),
        pytest.param(lambda p: _edit_body(p, revoked=None, extra_field=1), "state-tampered", id="field-added"),
        pytest.param(lambda p: (p.parent / "agent.key").unlink(), "state-corrupt", id="agent-key-deleted"),
        pytest.param(lambda p: (p.parent / "agent.key").write_text("{"), "state-corrupt", id="agent-key-damaged"),
    ],
)
def test_damage_is_an_error_code_never_a_crash(tmp_path: Path, damage: object, code: str) -> None:
    store = StateStore(str(tmp_path / "state"))
    write_token(store)
    damage(tmp_path / "state/state.json")  # type: ignore[operator]
    with pytest.raises(StateError) as failed:
        store.load()
    assert failed.value.code == code


def test_a_state_signed_by_another_key_is_tampered(tmp_path: Path) -> None:
    first, second = StateStore(str(tmp_path / "a")), StateStore(str(tmp_path / "b"))
    write_token(first, high_water=1)
    write_token(second, high_water=2)
    (tmp_path / "a/state.json").write_bytes((tmp_path / "b/state.json").read_bytes())
    with pytest.raises(StateError) as failed:
        first.load()
    assert failed.value.code == "state-tampered"


def test_key_rotation_keeps_high_water_and_drops_the_seat(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "s"))
    old = agent_key_for(tmp_path / "s")
    write_token(store, high_water=1234)
    store.update(lambda state, _key: state.clear_seat(), new_key=True)
    loaded = store.load()
    assert loaded.state.token is None
    assert loaded.state.high_water == 1234
    assert loaded.agent_x != old.x
    assert not (tmp_path / "s/agent.key.next").exists()


def test_a_rotation_cut_short_is_completed_on_load(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "s"))
    write_token(store)
    # Simulate a crash between writing the state (signed by the next key) and renaming the key.
    original_replace = os.replace
    calls: list[str] = []

    def crash_on_key_rename(src: str, dst: str) -> None:
        if src.endswith("agent.key.next"):
            calls.append(src)
            raise KeyboardInterrupt
        original_replace(src, dst)

    os.replace = crash_on_key_rename  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            store.update(lambda state, _key: state.clear_seat(), new_key=True)
    finally:
        os.replace = original_replace
    assert calls and (tmp_path / "s/agent.key.next").exists()
    loaded = store.load()
    assert loaded.state.token is None
    assert not (tmp_path / "s/agent.key.next").exists()
    key = store.agent_key()
    assert key is not None and key.x == loaded.agent_x


def test_unknown_fields_survive_a_rewrite(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "s"))
    write_token(store)
    key = store.agent_key()
    assert key is not None
    state = store.load().state
    state.extra["from_a_newer_agent"] = {"x": 1}
    store._write(state, key)
    store.update(lambda s, _k: None)
    assert store.load().state.extra == {"from_a_newer_agent": {"x": 1}}


# ------------------------------------------------------------------ the clock mark in more than one place

RELEASED = "2026-03-01"


def _checker(installed: Installed, *marks: Path) -> Checker:
    return Checker(
        state_dir=str(installed.state_dir),
        jwks=str(installed.jwks),
        sysroot=str(installed.machine.root),
        clock_marks=tuple(str(m) for m in marks),
    )


def test_restoring_an_old_state_file_does_not_lower_the_clock_mark(install: Callable[..., Installed]) -> None:
    installed = install()
    saved = (installed.seat_dir / "state.json").read_bytes()
    now = datetime.now(UTC)
    assert _checker(installed).check("cad-pro", "1", RELEASED, now=now + timedelta(days=3)).code == "entitled"
    (installed.seat_dir / "state.json").write_bytes(saved)  # the old copy, validly signed
    verdict = _checker(installed).check("cad-pro", "1", RELEASED, now=now + timedelta(days=1))
    assert verdict.code == "clock-rollback"


def test_a_second_location_survives_restoring_the_whole_directory(
    install: Callable[..., Installed], tmp_path: Path
) -> None:
    installed = install()
    elsewhere = tmp_path / "elsewhere" / "clock.mark"
    elsewhere.parent.mkdir(mode=0o700)
    backup = tmp_path / "backup"
    shutil.copytree(installed.state_dir, backup)
    now = datetime.now(UTC)
    assert (
        _checker(installed, elsewhere).check("cad-pro", "1", RELEASED, now=now + timedelta(days=3)).code == "entitled"
    )
    shutil.rmtree(installed.state_dir)
    shutil.copytree(backup, installed.state_dir)  # state.json, the keys and clock.mark, all old
    late = now + timedelta(days=1)
    assert _checker(installed, elsewhere).check("cad-pro", "1", RELEASED, now=late).code == "clock-rollback"
    # Without the second location the restored directory is all there is: the documented limit.
    assert _checker(installed).check("cad-pro", "1", RELEASED, now=late).code == "entitled"


def _mark_from(clock_x: str, high_water: int, sign: Callable[[bytes], bytes]) -> str:
    body = {"clock_x": clock_x, "high_water": high_water}
    message = b"tessera-agent-clock/1\x00" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return json.dumps({"format": "tessera-agent-clock/1", **body, "sig": b64u(sign(message))})


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda x: "{not json", id="garbage"),
        pytest.param(lambda x: _mark_from(x, 4_102_444_800, lambda m: b"\0" * 64), id="bad-signature"),
        pytest.param(
            lambda x: _mark_from(
                b64u(Ed25519PrivateKey.generate().public_key().public_bytes_raw()),
                4_102_444_800,
                Ed25519PrivateKey.generate().sign,
            ),
            id="another-clock-key",
        ),
        pytest.param(
            lambda x: json.dumps({"format": "tessera-agent-clock/1", "clock_x": x, "high_water": True, "sig": ""}),
            id="wrong-type",
        ),
    ],
)
def test_a_forged_future_mark_cannot_brick_the_agent(
    install: Callable[..., Installed], tmp_path: Path, forge: Callable[[str], str]
) -> None:
    installed = install()
    clock_x = installed.store.load().state.clock_x
    assert clock_x is not None
    elsewhere = tmp_path / "elsewhere.mark"
    for path in (installed.state_dir / "clock.mark", elsewhere):
        path.write_text(forge(clock_x))
    assert _checker(installed, elsewhere).check("cad-pro", "1", RELEASED).code == "entitled"


def test_the_clock_key_going_missing_is_corrupt(install: Callable[..., Installed]) -> None:
    installed = install()
    (installed.state_dir / "clock.key").unlink()
    assert _checker(installed).check("cad-pro", "1", RELEASED).code == "state-corrupt"


def test_the_clock_key_is_kept_across_a_deactivation(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "s"))
    write_token(store, high_water=1234)
    before = (tmp_path / "s/clock.key").read_bytes()
    store.update(lambda state, _key: state.clear_seat(), new_key=True)
    assert (tmp_path / "s/clock.key").read_bytes() == before
    assert store.load().state.high_water == 1234


# ------------------------------------------------------------------ symlinks and the directory


def _agent_cli(state_dir: Path, machine: FakeMachine, *rest: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "client_agent.cli", "--state-dir", str(state_dir), "--sysroot", str(machine.root),
         "--jwks", str(state_dir.parent / "jwks.json"), "--json", *rest],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    err = json.loads(done.stderr.strip().splitlines()[-1]) if done.stderr.strip() else {}
    out = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, err or out


@pytest.mark.parametrize("name", ["state.lock", "state.json", "agent.key", "clock.key"])
def test_a_planted_symlink_is_refused_and_nothing_is_written_through_it(
    tmp_path: Path, machine: FakeMachine, name: str
) -> None:
    state_dir = tmp_path / "s"
    agent_key_for(state_dir, "cad-pro", "TSR-1")  # a state directory the agent made
    # The seat's own files are in its directory, the lock and the clock key are the directory's.
    planted = (Path(seat_store(state_dir, "cad-pro", "TSR-1").dir) if name in ("state.json", "agent.key")
               else state_dir) / name  # fmt: skip
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted.unlink()
    planted.symlink_to(victim)
    rc, err = _agent_cli(state_dir, machine, "offline-request", "TSR-1", "--product", "cad-pro",
                         "--out", str(tmp_path / "req.json"))  # fmt: skip
    assert (rc, err["code"]) == (1, "state-symlink"), err
    assert victim.read_text() == "precious\n"
    assert planted.is_symlink()


def test_a_symlink_for_a_lock_that_does_not_exist_yet_is_refused(tmp_path: Path, machine: FakeMachine) -> None:
    state_dir = tmp_path / "s"
    state_dir.mkdir(mode=0o700)
    (state_dir / "state.lock").symlink_to(tmp_path / "created-through-the-link")
    rc, err = _agent_cli(state_dir, machine, "offline-request", "TSR-1", "--product", "cad-pro",
                         "--out", str(tmp_path / "req.json"))  # fmt: skip
    assert (rc, err["code"]) == (1, "state-symlink")
    assert not (tmp_path / "created-through-the-link").exists()


def test_check_refuses_a_symlinked_state_file(install: Callable[..., Installed], tmp_path: Path) -> None:
    installed = install()
    real = tmp_path / "real-state.json"
    (installed.seat_dir / "state.json").rename(real)
    (installed.seat_dir / "state.json").symlink_to(real)
    verdict = _checker(installed).check("cad-pro", "1", RELEASED)
    assert verdict.code == "state-symlink" and "symlink" in verdict.detail


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o720], ids=["0770", "0707", "0777", "0720"])
def test_a_state_directory_others_may_write_is_refused(
    install: Callable[..., Installed], machine: FakeMachine, mode: int
) -> None:
    installed = install()
    os.chmod(installed.state_dir, mode)
    assert _checker(installed).check("cad-pro", "1", RELEASED).code == "state-dir-unsafe"
    rc, err = _agent_cli(installed.state_dir, machine, "offline-request", "TSR-1", "--product", "cad-pro",
                         "--out", str(installed.state_dir.parent / "req.json"))  # fmt: skip
    assert (rc, err["code"]) == (1, "state-dir-unsafe")
    assert "chmod 700" in str(err["detail"])
    rc, out = _agent_cli(installed.state_dir, machine, "check", "--product", "cad-pro", "--version", "1",
                         "--released", RELEASED)  # fmt: skip
    assert (rc, out["code"]) == (1, "state-dir-unsafe")


def test_a_state_directory_of_another_user_is_refused(install: Callable[..., Installed]) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory away")
    installed = install()
    os.chown(installed.state_dir, pwd.getpwnam("nobody").pw_uid, -1)
    verdict = _checker(installed).check("cad-pro", "1", RELEASED)
    assert verdict.code == "state-dir-unsafe" and "belongs to user" in verdict.detail
