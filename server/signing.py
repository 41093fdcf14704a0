"""Activation tokens: claims from a decided activation, signed with the keyring's active key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
import orjson

from keys.keyring import SigningKey

TOKEN_TYPE = "tessera-activation+jwt"  # noqa: S105 - a media type, not a secret
REVOCATIONS_TYPE = "tessera-revocations+jwt"


@dataclass(frozen=True, slots=True)
class SeatGrant:
    """Everything a token says, decided inside the database transaction."""

    activation_id: str
    licence_id: str
    product: str
    kind: str
    model: str
    seats: int
    features: list[str]
    salt: str
    components: list[list[str]]
    match: int
    dongle_serial: str | None
    agent_key: str
    issued: datetime
    expires: datetime
    maint_until: datetime | None
    use_until: datetime | None
    created: bool
    grace_until: datetime | None = None  # subscriptions with grace days: the product may run until then


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def claims_for(grant: SeatGrant, issuer: str) -> dict[str, Any]:
    issued = int(grant.issued.timestamp())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": grant.product,
        "sub": grant.licence_id,
        "jti": grant.activation_id,
        "iat": issued,
        "nbf": issued,
        "exp": int(grant.expires.timestamp()),
        "kind": grant.kind,
        "model": grant.model,
        "host": {
            "salt": grant.salt,
            "components": [{"kind": kind, "digest": digest} for kind, digest in grant.components],
            "match": grant.match,
        },
        "features": grant.features,
        "seats": grant.seats,
        "cnf": {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": grant.agent_key}},
    }
    if grant.dongle_serial is not None:
        claims["dongle"] = grant.dongle_serial
    if grant.maint_until is not None:
        claims["maint_until"] = _rfc3339(grant.maint_until)
    if grant.use_until is not None:
        claims["use_until"] = _rfc3339(grant.use_until)
        if grant.grace_until is not None and grant.kind == "subscription":
            claims["grace_until"] = _rfc3339(grant.grace_until)
    return claims


class TokenSigner:
    def __init__(self, key: SigningKey, issuer: str) -> None:
        self.kid = key.kid
        self.issuer = issuer
        self._key = key.private_key
        self._jws = jwt.PyJWS()
        self._headers = {"kid": key.kid, "typ": TOKEN_TYPE}

    def sign(self, grant: SeatGrant) -> str:
        payload = orjson.dumps(claims_for(grant, self.issuer))
        return self._jws.encode(payload, self._key, algorithm="EdDSA", headers=self._headers)

    def sign_revocations(self, product: str, serials: list[str], now: datetime, ttl: timedelta) -> str:
        """The revoked dongle serials of a product, typed so it can never pass as an activation token."""
        claims = {"iss": self.issuer, "aud": product, "iat": int(now.timestamp()),
                  "exp": int((now + ttl).timestamp()), "revoked_dongles": serials}  # fmt: skip
        headers = {"kid": self.kid, "typ": REVOCATIONS_TYPE}
        return self._jws.encode(orjson.dumps(claims), self._key, algorithm="EdDSA", headers=headers)
