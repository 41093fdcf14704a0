from __future__ import annotations

import base64
import os
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.keyring import ActiveKeyRetire, BadPassphrase, Keyring, PassphraseRequired, UnknownKey
from keys.points import is_acceptable_public_key
from tests.support.ed25519_reference import is_acceptable_public_key as reference

NOW = datetime(2026, 11, 22, tzinfo=UTC)

# libsodium's blocklist of small-order encodings, and their sign-bit twins.
SMALL_ORDER = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
]


@pytest.mark.parametrize("encoded", SMALL_ORDER)
def test_small_order_and_non_canonical_points_are_refused(encoded: str) -> None:
    raw = bytes.fromhex(encoded)
    assert not is_acceptable_public_key(raw)
    assert not reference(raw)


def test_real_keys_are_accepted_and_both_checks_agree_on_random_bytes() -> None:
    for _ in range(50):
        key = Ed25519PrivateKey.generate().public_key()
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert is_acceptable_public_key(raw) and reference(raw)
    for _ in range(200):
        raw = secrets.token_bytes(32)
        # Random bytes: about half are on the curve; libsodium also refuses points outside the
        # prime-order subgroup, which the reference (cofactor check only) may accept.
        if is_acceptable_public_key(raw):
            assert reference(raw)
    assert not is_acceptable_public_key(b"\x01" * 31)


def test_the_identity_key_verifies_a_forged_signature_in_openssl_which_is_why_we_check() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    identity = bytes.fromhex(SMALL_ORDER[1])
    forged = identity + bytes(32)  # R = identity, S = 0
    Ed25519PublicKey.from_public_bytes(identity).verify(forged, b"any message at all")
    assert not is_acceptable_public_key(identity)


def test_keyring_generate_rotate_retire(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "keys", b"passphrase")
    first = ring.generate(now=NOW)
    assert first.state == "active"
    pem = tmp_path / "keys" / f"{first.kid}.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert b"ENCRYPTED" in pem.read_bytes()
    assert stat.S_IMODE((tmp_path / "keys" / "keyring.json").stat().st_mode) == 0o600
    second = ring.rotate(now=NOW)
    states = {e.kid: e.state for e in ring.entries()}
    assert states == {first.kid: "published", second.kid: "active"}
    assert ring.signer().kid == second.kid
    assert {k["kid"] for k in ring.jwks()["keys"]} == {first.kid, second.kid}
    with pytest.raises(ActiveKeyRetire):
        ring.retire(second.kid)
    ring.retire(first.kid)
    assert [k["kid"] for k in ring.jwks()["keys"]] == [second.kid]
    with pytest.raises(UnknownKey):
        ring.retire("nope")
    # The JWKS's x is the signer's real public key.
    x = ring.jwks()["keys"][0]["x"]
    raw = (
        ring.signer().private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    assert base64.urlsafe_b64decode(x + "=") == raw


def test_keyring_refuses_without_or_with_a_wrong_passphrase(tmp_path: Path) -> None:
    with pytest.raises(PassphraseRequired):
        Keyring(tmp_path, None).generate(now=NOW)
    Keyring(tmp_path, b"right").generate(now=NOW)
    with pytest.raises(BadPassphrase):
        Keyring(tmp_path, b"wrong").signer()
    with pytest.raises(PassphraseRequired):
        Keyring(tmp_path, None).signer()
    assert Keyring(tmp_path, None).jwks()["keys"]  # publishing needs no passphrase


def test_plaintext_keys_only_when_asked(tmp_path: Path) -> None:
    entry = Keyring(tmp_path, None).generate(now=NOW, plaintext=True)
    assert b"ENCRYPTED" not in (tmp_path / f"{entry.kid}.pem").read_bytes()
    assert Keyring(tmp_path, None).signer().kid == entry.kid
    assert os.stat(tmp_path / f"{entry.kid}.pem").st_mode & 0o077 == 0
