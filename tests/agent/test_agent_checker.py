"""The in-process check, end to end on fake machines with a throwaway vendor key."""

import base64
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from agent_fakes import DAY, FakeMachine, Installed, Vendor, b64u, claims_for, put_token
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_agent import Checker, checker, fingerprint, tokens
from client_agent.state import State

RELEASED = date(2026, 3, 1)


def checker_for(installed: Installed, machine: FakeMachine | None = None, **kw: object) -> Checker:
    return Checker(
        state_dir=str(installed.state_dir),
        jwks=str(installed.jwks),
        sysroot=str((machine or installed.machine).root),
        **kw,  # type: ignore[arg-type]
    )


def test_entitled_on_its_own_machine(install: Callable[..., Installed]) -> None:
    verdict = checker_for(install()).check("cad-pro", "5.2", RELEASED)
    assert (verdict.code, verdict.ok) == ("entitled", True)


def test_no_token(tmp_path: Path, machine: FakeMachine, vendor: Vendor) -> None:
    jwks = vendor.write_jwks(tmp_path / "jwks.json")
    verdict = Checker(state_dir=str(tmp_path / "empty"), jwks=str(jwks), sysroot=str(machine.root)).check(
        "cad-pro", "5.2", RELEASED
    )
    assert verdict.code == "no-token"


def test_token_on_another_machine_is_host_mismatch(
    install: Callable[..., Installed], other_machine: FakeMachine, tmp_path: Path
) -> None:
    installed = install()
    copied = tmp_path / "copied-state"
    shutil.copytree(installed.state_dir, copied)
    on_b = Checker(state_dir=str(copied), jwks=str(installed.jwks), sysroot=str(other_machine.root))
    assert on_b.check("cad-pro", "5.2", RELEASED).code == "host-mismatch"


def test_a_replaced_nic_is_within_tolerance_two_changes_are_not(install: Callable[..., Installed]) -> None:
    installed = install(tolerance=1)
    machine = installed.machine
    machine.remove_nic("eth0")
    machine.add_nic("eth0", "00:1b:21:99:88:77")
    assert checker_for(installed).check("cad-pro", "5.2", RELEASED).code == "entitled"
    machine.write("sys/block/nvme0n1/device/serial", "NEW-DISK-0001\n")
    assert checker_for(installed).check("cad-pro", "5.2", RELEASED).code == "host-mismatch"


def test_release_dates_against_maintenance(install: Callable[..., Installed]) -> None:
    check = checker_for(install(maint_until="2027-01-01T00:00:00Z")).check
    assert check("cad-pro", "6.0", date(2026, 12, 31)).code == "entitled"
    assert check("cad-pro", "7.0", "2027-01-02").code == "release-not-entitled"


def test_wrong_product_and_invalid_questions(install: Callable[..., Installed]) -> None:
    check = checker_for(install()).check
    assert check("cad-lite", "1.0", RELEASED).code == "wrong-product"
    assert check("cad-pro", "1.0", "yesterday").code == "invalid-request"
    assert check("", "1.0", RELEASED).code == "invalid-request"


def test_lease_and_subscription_end(install: Callable[..., Installed]) -> None:
    now = time.time()
    installed = install(
        now=now,
        kind="subscription",
        maint_until=None,
        use_until=datetime.fromtimestamp(now + 10 * DAY, UTC).isoformat(),
    )
    check = checker_for(installed).check
    at = datetime.fromtimestamp(now, UTC)
    assert check("cad-pro", "1", RELEASED, now=at + timedelta(days=5)).code == "entitled"
    assert check("cad-pro", "1", RELEASED, now=at + timedelta(days=11)).code == "subscription-ended"
    assert check("cad-pro", "1", RELEASED, now=at + timedelta(days=31)).code == "lease-expired"


def test_clock_set_back_is_detected_and_remembered(install: Callable[..., Installed]) -> None:
    installed = install()
    now = datetime.now(UTC)
    first = checker_for(installed)
    assert first.check("cad-pro", "1", RELEASED, now=now + timedelta(days=3)).code == "entitled"
    # A fresh process (the CLI) sees the persisted high-water mark.
    fresh = checker_for(installed)
    assert fresh.check("cad-pro", "1", RELEASED, now=now + timedelta(days=1)).code == "clock-rollback"
    assert installed.store.load().state.high_water >= int((now + timedelta(days=3)).timestamp())


def test_high_water_is_not_written_on_every_check(install: Callable[..., Installed]) -> None:
    installed = install()
    check = checker_for(installed)
    now = datetime.now(UTC)
    check.check("cad-pro", "1", RELEASED, now=now + timedelta(seconds=120))
    written = os.stat(installed.seat_dir / "state.json").st_mtime_ns
    for seconds in range(121, 150):
        check.check("cad-pro", "1", RELEASED, now=now + timedelta(seconds=seconds))
    assert os.stat(installed.seat_dir / "state.json").st_mtime_ns == written


def test_tampered_token_byte_is_bad_signature(install: Callable[..., Installed]) -> None:
    installed = install()
    head, body, sig = installed.token.split(".")
    tampered = f"{head}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{sig}"
    put_token(installed.state_dir, tampered)
    assert checker_for(installed).check("cad-pro", "1", RELEASED).code == "bad-signature"


def test_token_by_an_unknown_key_is_refused(install: Callable[..., Installed]) -> None:
    installed = install()
    rogue = Vendor(kid="rogue", key=Ed25519PrivateKey.generate())
    key = installed.store.agent_key()
    assert key is not None
    put_token(installed.state_dir, rogue.mint(claims_for(installed.machine.facts(), key.x)))
    assert checker_for(installed).check("cad-pro", "1", RELEASED).code == "bad-signature"


def test_a_token_bound_to_another_agent_key_is_refused(install: Callable[..., Installed], vendor: Vendor) -> None:
    installed = install()
    put_token(installed.state_dir, vendor.mint(claims_for(installed.machine.facts(), "someone-elses-key")))
    assert checker_for(installed).check("cad-pro", "1", RELEASED).code == "state-tampered"


def test_removing_a_key_from_the_jwks_takes_effect(install: Callable[..., Installed]) -> None:
    installed = install()
    check = checker_for(installed)
    assert check.check("cad-pro", "1", RELEASED).code == "entitled"
    installed.jwks.write_text(json.dumps({"keys": [Vendor(kid="new").public_jwk()]}))
    assert check.check("cad-pro", "1", RELEASED).code == "bad-signature"
    installed.jwks.unlink()
    assert check.check("cad-pro", "1", RELEASED).code == "jwks-unavailable"


def test_corrupt_state_is_a_clear_code(install: Callable[..., Installed]) -> None:
    installed = install()
    path = installed.seat_dir / "state.json"
    path.write_bytes(path.read_bytes()[:100])
    verdict = checker_for(installed).check("cad-pro", "1", RELEASED)
    assert verdict.code == "state-corrupt"
    assert "state.json" in verdict.detail


def test_every_process_that_loads_the_state_verifies_the_token(
    install: Callable[..., Installed], monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = install()
    assert checker_for(installed).check("cad-pro", "1", RELEASED).code == "entitled"
    calls = []
    real = tokens.verify
    monkeypatch.setattr(tokens, "verify", lambda *a: calls.append(1) or real(*a))
    fresh = checker_for(installed)
    for _ in range(3):
        assert fresh.check("cad-pro", "1", RELEASED).code == "entitled"
    assert calls == [1]  # once per load, not once per check


def _b64u_json(segment: str) -> dict[str, object]:
    loaded = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert isinstance(loaded, dict)
    return loaded


def forge(installed: Installed, **claims: object) -> None:
    """What anyone who can read agent.key can do: edit the token's claims, keep its signature,
    write a record saying it was verified under this very JWKS, and sign the state again."""
    head, body, sig = installed.token.split(".")
    payload = _b64u_json(body) | claims
    edited = f"{head}.{b64u(json.dumps(payload).encode())}.{sig}"
    record = {
        "token_sha256": hashlib.sha256(edited.encode()).hexdigest(),
        "jwks_sha256": hashlib.sha256(installed.jwks.read_bytes()).hexdigest(),
    }

    def change(state: State, _key: object) -> None:
        state.token = edited
        state.extra["verified"] = record
        if "aud" in claims:
            state.product = str(claims["aud"])

    installed.store.update(change)
    if "aud" in claims:  # a check asks the seats its product names: the forger renames the seat too
        seat = installed.seat_dir
        seat.rename(seat.with_name(f"{claims['aud']}@{seat.name.partition('@')[2]}"))


ENDED = {"kind": "subscription", "maint_until": None, "use_until": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("issued", "claims", "question"),
    [
        pytest.param({}, {"maint_until": "2099-01-01T00:00:00Z"}, {"released": date(2098, 1, 1)}, id="maintenance"),
        pytest.param({}, {"exp": 4_102_444_800}, {"now": datetime(2099, 1, 1, tzinfo=UTC)}, id="lease"),
        pytest.param({}, {"aud": "cad-ultimate"}, {"product": "cad-ultimate"}, id="product"),
        pytest.param(ENDED, {"use_until": "2099-01-01T00:00:00Z"}, {"released": date(2025, 1, 1)}, id="subscription"),
    ],
)
def test_a_forged_verified_record_does_not_admit_an_edited_token(
    install: Callable[..., Installed],
    issued: dict[str, object],
    claims: dict[str, object],
    question: dict[str, object],
) -> None:
    installed = install(**issued)
    assert checker_for(installed).check("cad-pro", "1", RELEASED).code in ("entitled", "subscription-ended")
    forge(installed, **claims)
    ask = {"product": "cad-pro", "version": "1", "released": RELEASED} | question
    verdict = checker_for(installed).check(**ask)  # type: ignore[arg-type]
    assert verdict.code == "bad-signature"


def test_an_edited_host_claim_is_refused_on_the_other_machine(
    install: Callable[..., Installed], other_machine: FakeMachine, tmp_path: Path
) -> None:
    installed = install()
    salt = fingerprint.licence_salt("TSR-ABCDE-FGHIJ-KLMNO-PQRST-UVWXY")
    theirs = [{"kind": k, "digest": d} for k, d in fingerprint.digest_components(other_machine.facts(), salt)]
    forge(installed, host={"salt": salt, "components": theirs, "match": 1})
    assert checker_for(installed, other_machine).check("cad-pro", "1", RELEASED).code == "bad-signature"


def test_the_check_path_does_not_import_pyjwt(install: Callable[..., Installed]) -> None:
    installed = install()
    import subprocess

    code = (
        "import sys; from client_agent import Checker;"
        f"v = Checker(state_dir={str(installed.state_dir)!r}, jwks={str(installed.jwks)!r},"
        f" sysroot={str(installed.machine.root)!r}).check('cad-pro', '1', '2026-03-01');"
        "heavy = sorted(m for m in ('jwt', 'aiohttp', 'psutil', 'machineid') if m in sys.modules);"
        "print(v.code, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "entitled []"


def test_a_new_token_is_picked_up_by_mtime(install: Callable[..., Installed], vendor: Vendor) -> None:
    installed = install(maint_until="2026-01-01T00:00:00Z")
    check = checker_for(installed)
    assert check.check("cad-pro", "1", RELEASED).code == "release-not-entitled"
    key = installed.store.agent_key()
    assert key is not None
    put_token(installed.state_dir, vendor.mint(claims_for(installed.machine.facts(), key.x)))
    assert check.check("cad-pro", "1", RELEASED).code == "entitled"


def test_revoked_seat(install: Callable[..., Installed]) -> None:
    installed = install()

    def revoke(state: State, _key: object) -> None:
        state.revoked = "licence-revoked"

    installed.store.update(revoke)
    assert checker_for(installed).check("cad-pro", "1", RELEASED).code == "revoked"


def test_dongle_unplugged_and_plugged_back(install: Callable[..., Installed], machine: FakeMachine) -> None:
    machine.plug_dongle("1-1.2", "20a0", "4108", "DNG-000123")
    installed = install(model="dongle", dongle="DNG-000123", dongle_ids="20a0:4108")
    check = checker_for(installed)
    assert check.check("cad-pro", "1", RELEASED).code == "entitled"
    machine.unplug("1-1.2")
    assert check.check("cad-pro", "1", RELEASED).code == "dongle-missing"
    machine.plug_dongle("1-1.3", "20a0", "4108", "DNG-000123")  # another port is fine
    assert check.check("cad-pro", "1", RELEASED).code == "entitled"
    machine.unplug("1-1.3")
    machine.plug_dongle("1-1.3", "20a0", "4108", "DNG-999999")  # another dongle is not
    assert check.check("cad-pro", "1", RELEASED).code == "dongle-missing"
    machine.plug_dongle("1-4", "dead", "beef", "DNG-000123")  # same serial, other device IDs
    assert check.check("cad-pro", "1", RELEASED).code == "dongle-missing"


def test_fingerprint_is_read_once_then_on_ttl(
    install: Callable[..., Installed], monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = install()
    check = checker_for(installed)
    reads = []
    real = checker.fingerprint.read_facts
    monkeypatch.setattr(checker.fingerprint, "read_facts", lambda root: reads.append(root) or real(root))
    for _ in range(50):
        check.check("cad-pro", "1", RELEASED)
    assert len(reads) == 1
    monkeypatch.setattr(checker, "FACTS_TTL", 0.0)
    check.check("cad-pro", "1", RELEASED)
    assert len(reads) == 2


def test_status_is_redacted(install: Callable[..., Installed]) -> None:
    installed = install()
    status = checker_for(installed).status()
    assert status["active"] is True and status["model"] == "activation"
    text = json.dumps(status)
    assert installed.token not in text and installed.token.split(".")[2] not in text
    assert "salt" not in text


def test_warm_in_process_check_is_fast(install: Callable[..., Installed]) -> None:
    check = checker_for(install()).check
    for _ in range(200):
        check("cad-pro", "5.2", RELEASED)
    samples = []
    for _ in range(2000):
        started = time.perf_counter()
        check("cad-pro", "5.2", RELEASED)
        samples.append(time.perf_counter() - started)
    samples.sort()
    assert samples[len(samples) // 2] < 100e-6  # budget 20 µs (see bench/); loose against noisy CI


def test_observing_time_without_checks_moves_the_high_water_mark(install: Callable[..., Installed]) -> None:
    installed = install()
    later = datetime.now(UTC) + timedelta(hours=2)
    checker_for(installed).observe_time(now=later)
    assert installed.store.load().state.high_water == int(later.timestamp())
    assert (
        checker_for(installed).check("cad-pro", "1", RELEASED, now=later - timedelta(hours=1)).code == "clock-rollback"
    )
