"""Verify activation tokens against the trusted JWKS file, with PyJWT.

Only Ed25519 is accepted (`alg` `EdDSA`, or RFC 9864's `Ed25519`), only with
`typ: tessera-activation+jwt`, only under a `kid` the JWKS file lists. Keys
come from that file and nowhere else: `jku`, `x5u` and `jwk` headers are never
looked at, an unknown `kid` is refused, nothing is fetched.

Every failure is one `TokenError` with code `bad-signature`; the detail says
why, for the log, but callers must not branch on it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from client_agent.util import b64u_decode
from client_agent.verdict import BAD_SIGNATURE, JWKS_UNAVAILABLE, Claims, ClaimsError, claims_from_payload

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOKEN_TYP = "tessera-activation+jwt"  # noqa: S105 (a media type, not a secret)
REVOCATIONS_TYP = "tessera-revocations+jwt"
ALGORITHMS = ("EdDSA", "Ed25519")


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


@dataclass(frozen=True)
class Jwks:
    keys: dict[str, Ed25519PublicKey]
    sha256: str  # of the file's bytes: a verification is valid for this JWKS only

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


def _pyjws() -> Any:
    from jwt.algorithms import OKPAlgorithm
    from jwt.api_jws import PyJWS

    jws = PyJWS(algorithms=["EdDSA"])
    jws.register_algorithm("Ed25519", OKPAlgorithm())
    return jws


_JWS: Any = None


def verify_payload(token: str, jwks: Jwks, typ: str = TOKEN_TYP) -> dict[str, Any]:
    """The payload of `token` if its signature verifies under a trusted key and it is of type `typ`."""
    import jwt

    global _JWS
    if _JWS is None:
        _JWS = _pyjws()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError(f"not a JWS: {exc}") from None
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
    try:
        decoded = _JWS.decode_complete(token, key=key, algorithms=[alg])
    except jwt.PyJWTError as exc:
        raise TokenError(f"signature does not verify: {exc}") from None
    try:
        payload = json.loads(decoded["payload"])
    except ValueError:
        raise TokenError("the payload is not JSON") from None
    if not isinstance(payload, dict):
        raise TokenError("the payload is not a JSON object")
    return payload


def verify(token: str, jwks: Jwks) -> Claims:
    payload = verify_payload(token, jwks)
    try:
        return claims_from_payload(payload)
    except ClaimsError as exc:
        raise TokenError(f"malformed claims: {exc}") from None
