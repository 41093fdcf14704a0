import json
import os
from pathlib import Path

import pytest
from agent_fakes import agent_key_for, mode_of

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
    assert sorted(os.listdir(tmp_path / "state")) == [
        "agent.key",
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
