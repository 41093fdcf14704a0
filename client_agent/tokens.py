"""Verify activation tokens against the trusted JWKS file.

Only Ed25519 is accepted (`alg` `EdDSA`, or RFC 9864's `Ed25519`), only with
`typ: tessera-activation+jwt`, only under a `kid` the JWKS file lists. Keys
come from that file and nowhere else: `jku`, `x5u` and `jwk` headers are never
looked at, an unknown `kid` is refused, nothing is fetched.

Every process that loads the state verifies the token again (no record of an
earlier verification is trusted: it would sit beside the state, under a key an
administrator can read). The compact JWS is therefore checked here with
cryptography's Ed25519 directly, not PyJWT: importing PyJWT costs more than the
whole `check` command may take. With one algorithm, one key type and no
optional features (`crit` is refused), the format leaves nothing else to check.

Every failure is one `TokenError` with code `bad-signature`; the detail says
why, for the log, but callers must not branch on it.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from client_agent.util import b64u_decode
from client_agent.verdict import BAD_SIGNATURE, JWKS_UNAVAILABLE, Claims, ClaimsError, claims_from_payload

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOKEN_TYP = "tessera-activation+jwt"  # noqa: S105 (a media type, not a secret)
REVOCATIONS_TYP = "tessera-revocations+jwt"
ALGORITHMS = ("EdDSA", "Ed25519")

# base64url without padding (RFC 7515 section 2): anything else is not a JWS segment.
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


class TokenError(Exception):
    code = BAD_SIGNATURE

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class JwksError(Exception):
    code = JWKS_UNAVAILABLE

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Jwks:
    """The trusted keys by `kid` (a plain class: dataclasses would cost the `check` command start-up time)."""

    def __init__(self, keys: dict[str, Ed25519PublicKey], sha256: str) -> None:
        self.keys = keys
        self.sha256 = sha256  # of the file's bytes

    @classmethod
    def from_bytes(cls, raw: bytes) -> Jwks:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise JwksError(f"the JWKS is not JSON: {exc}") from None
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise JwksError("the JWKS has no 'keys' list")
        keys: dict[str, Ed25519PublicKey] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            # Anything but a signing Ed25519 key is skipped, not trusted.
            if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
                continue
            if entry.get("use", "sig") != "sig" or entry.get("alg", "EdDSA") not in ALGORITHMS:
                continue
            kid, x = entry.get("kid"), entry.get("x")
            if not isinstance(kid, str) or not isinstance(x, str) or "d" in entry:
                continue
            try:
                raw_x = b64u_decode(x)
                if len(raw_x) != 32:
                    continue
                keys[kid] = Ed25519PublicKey.from_public_bytes(raw_x)
            except ValueError:
                continue
        if not keys:
            raise JwksError("the JWKS holds no usable Ed25519 signing key")
        return cls(keys=keys, sha256=hashlib.sha256(raw).hexdigest())

    @classmethod
    def load(cls, path: str) -> Jwks:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            raise JwksError(f"cannot read the trusted JWKS {path}: {exc.strerror}") from None
        return cls.from_bytes(raw)


def _segment(text: str, what: str) -> bytes:
    if _SEGMENT.fullmatch(text) is None or len(text) % 4 == 1:
        raise TokenError(f"the {what} is not base64url")
    try:
        return b64u_decode(text)
    except ValueError:
        raise TokenError(f"the {what} is not base64url") from None


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise TokenError(f"the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError(f"the {what} is not a JSON object")
    return value


def verify_payload(token: str, jwks: Jwks, typ: str = TOKEN_TYP) -> dict[str, Any]:
    """The payload of `token` if its signature verifies under a trusted key and it is of type `typ`."""
    from cryptography.exceptions import InvalidSignature

    if not isinstance(token, str):
        raise TokenError("not a JWS")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("not a compact JWS")
    head_b64, body_b64, sig_b64 = parts
    header = _json_object(_segment(head_b64, "header"), "header")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise TokenError(f"algorithm {alg!r} is not accepted")
    if header.get("typ") != typ:
        raise TokenError(f"typ {header.get('typ')!r} is not {typ!r}")
    if "crit" in header:
        raise TokenError("critical header extensions are not understood")
    kid = header.get("kid")
    key = jwks.keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise TokenError(f"key id {kid!r} is not in the trusted JWKS")
    signature = _segment(sig_b64, "signature")
    if len(signature) != 64:
        raise TokenError("an Ed25519 signature is 64 bytes")
    try:
        key.verify(signature, f"{head_b64}.{body_b64}".encode("ascii"))
    except (InvalidSignature, binascii.Error, ValueError):
        raise TokenError("signature does not verify") from None
    return _json_object(_segment(body_b64, "payload"), "payload")


def verify(token: str, jwks: Jwks) -> Claims:
    payload = verify_payload(token, jwks)
    try:
        return claims_from_payload(payload)
    except ClaimsError as exc:
        raise TokenError(f"malformed claims: {exc}") from None
