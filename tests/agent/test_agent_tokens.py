import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import FakeMachine, Vendor, b64u, claims_for
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_agent.tokens import Jwks, JwksError, TokenError, verify


@pytest.fixture
def claims(machine: FakeMachine) -> dict[str, Any]:
    return claims_for(machine.facts(), "agent-x")


def jwks_of(vendor: Vendor) -> Jwks:
    return Jwks.from_bytes(json.dumps(vendor.jwks()).encode())


def test_a_good_token_verifies(vendor: Vendor, claims: dict[str, Any]) -> None:
    verified = verify(vendor.mint(claims), jwks_of(vendor))
    assert verified.aud == "cad-pro"
    assert verified.cnf_x == "agent-x"


def test_rfc9864_ed25519_alg_is_accepted(vendor: Vendor, claims: dict[str, Any]) -> None:
    assert verify(vendor.mint(claims, alg="Ed25519"), jwks_of(vendor)).jti == claims["jti"]


def test_any_of_several_trusted_keys(claims: dict[str, Any]) -> None:
    vendor = Vendor(extra_keys={"old-2025": Ed25519PrivateKey.generate()})
    token = vendor.mint(claims, kid="old-2025", key=vendor.extra_keys["old-2025"])
    assert verify(token, jwks_of(vendor)).sub == claims["sub"]


def _hs256(vendor: Vendor, claims: dict[str, Any]) -> str:
    # The classic confusion attack: HMAC keyed with the public key's bytes.
    head = b64u(json.dumps({"alg": "HS256", "kid": vendor.kid, "typ": "tessera-activation+jwt"}).encode())
    body = b64u(json.dumps(claims).encode())
    secret = vendor.public_jwk()["x"].encode()
    return f"{head}.{body}.{b64u(hmac.new(secret, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"


def _none(vendor: Vendor, claims: dict[str, Any]) -> str:
    head = b64u(json.dumps({"alg": "none", "kid": vendor.kid, "typ": "tessera-activation+jwt"}).encode())
    return f"{head}.{b64u(json.dumps(claims).encode())}."


def _tampered(vendor: Vendor, claims: dict[str, Any]) -> str:
    token = vendor.mint(claims)
    head, body, sig = token.split(".")
    changed = json.loads(__import__("base64").urlsafe_b64decode(body + "=="))
    changed["maint_until"] = "2099-01-01T00:00:00Z"
    return f"{head}.{b64u(json.dumps(changed).encode())}.{sig}"


def _flipped_signature(vendor: Vendor, claims: dict[str, Any]) -> str:
    token = vendor.mint(claims)
    return token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]


def _attacker_with_jwk_header(vendor: Vendor, claims: dict[str, Any]) -> str:
    attacker = Ed25519PrivateKey.generate()
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64u(attacker.public_key().public_bytes_raw())}
    return vendor.mint(
        claims, key=attacker, jwk=jwk, jku="https://evil.example/jwks.json", x5u="https://evil.example/c"
    )


def _short_signature(vendor: Vendor, claims: dict[str, Any]) -> str:
    head, body, _sig = vendor.mint(claims).split(".")
    return f"{head}.{body}.{b64u(b'x' * 63)}"


def _signed_non_json(vendor: Vendor, claims: dict[str, Any]) -> str:
    head = b64u(json.dumps({"alg": "EdDSA", "kid": vendor.kid, "typ": "tessera-activation+jwt"}).encode())
    body = b64u(b"\xff not json")
    return f"{head}.{body}.{b64u(vendor.key.sign(f'{head}.{body}'.encode()))}"


def test_a_token_signed_by_pyjwt_as_the_server_does_verifies(vendor: Vendor, claims: dict[str, Any]) -> None:
    import jwt

    token = jwt.PyJWS().encode(
        json.dumps(claims).encode(),
        vendor.key,
        algorithm="EdDSA",
        headers={"kid": vendor.kid, "typ": "tessera-activation+jwt"},
    )
    assert verify(token, jwks_of(vendor)).jti == claims["jti"]


def _attacker_unknown_kid(vendor: Vendor, claims: dict[str, Any]) -> str:
    return vendor.mint(claims, key=Ed25519PrivateKey.generate(), kid="attacker-1")


@pytest.mark.parametrize(
    ("make", "why"),
    [
        pytest.param(lambda v, c: v.mint(c, typ="JWT"), "typ", id="plain-jwt-typ"),
        pytest.param(lambda v, c: v.mint(c, typ=None), "typ", id="no-typ"),
        pytest.param(lambda v, c: v.mint(c, typ="tessera-refresh+jwt"), "typ", id="a-refresh-proof"),
        pytest.param(lambda v, c: v.mint(c, kid="nobody"), "key id", id="unknown-kid"),
        pytest.param(lambda v, c: v.mint(c, kid=None), "key id", id="no-kid"),
        pytest.param(lambda v, c: v.mint(c, crit=["exp"]), "critical", id="crit-header"),
        pytest.param(_hs256, "algorithm", id="hs256-confusion"),
        pytest.param(_none, "algorithm", id="alg-none"),
        pytest.param(lambda v, c: v.mint(c, alg="ES256"), "algorithm", id="es256"),
        pytest.param(_tampered, "signature", id="tampered-claims"),
        pytest.param(_flipped_signature, "signature", id="flipped-signature-byte"),
        pytest.param(_attacker_with_jwk_header, "signature", id="embedded-jwk-jku-x5u-ignored"),
        pytest.param(_attacker_unknown_kid, "key id", id="unknown-signer"),
        pytest.param(lambda v, c: "not.a.token", "header", id="garbage"),
        pytest.param(lambda v, c: v.mint(c) + ".x", "compact", id="four-parts"),
        pytest.param(lambda v, c: v.mint(c) + "==", "signature", id="padded-signature"),
        pytest.param(lambda v, c: "!" + v.mint(c), "header", id="outside-the-alphabet"),
        pytest.param(_short_signature, "64 bytes", id="short-signature"),
        pytest.param(_signed_non_json, "payload", id="signed-payload-not-json"),
        pytest.param(lambda v, c: v.mint({**c, "host": "x"}), "malformed", id="signed-but-malformed-claims"),
    ],
)
def test_bad_tokens_are_refused(vendor: Vendor, claims: dict[str, Any], make: Any, why: str) -> None:
    with pytest.raises(TokenError, match=why) as refused:
        verify(make(vendor, claims), jwks_of(vendor))
    assert refused.value.code == "bad-signature"


@pytest.mark.parametrize(
    ("document", "usable"),
    [
        pytest.param(
            {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": b64u(b"\x01" * 32)}]},
            {"k"},
            id="minimal",
        ),
        pytest.param({"keys": [{"kty": "RSA", "kid": "r", "n": "x", "e": "AQAB"}]}, None, id="rsa-only"),
        pytest.param(
            {"keys": [{"kty": "OKP", "crv": "X25519", "kid": "x", "x": b64u(b"\x01" * 32)}]},
            None,
            id="x25519",
        ),
        pytest.param(
            {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "e", "use": "enc", "x": b64u(b"\x01" * 32)}]},
            None,
            id="enc-key",
        ),
        pytest.param(
            {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "s", "x": b64u(b"\x01" * 31)}]},
            None,
            id="short-x",
        ),
        pytest.param({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64u(b"\x01" * 32)}]}, None, id="no-kid"),
        pytest.param({"nokeys": []}, None, id="no-keys-list"),
        pytest.param(
            {"keys": ["junk", {"kty": "OKP", "crv": "Ed25519", "kid": "ok", "x": b64u(b"\x02" * 32)}]},
            {"ok"},
            id="junk-skipped",
        ),
    ],
)
def test_jwks_loading(document: dict[str, Any], usable: set[str] | None) -> None:
    raw = json.dumps(document).encode()
    if usable is None:
        with pytest.raises(JwksError):
            Jwks.from_bytes(raw)
    else:
        assert set(Jwks.from_bytes(raw).keys) == usable


def test_jwks_file_errors(tmp_path: Path) -> None:
    with pytest.raises(JwksError, match="cannot read"):
        Jwks.load(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(JwksError, match="not JSON"):
        Jwks.load(str(tmp_path / "bad.json"))
