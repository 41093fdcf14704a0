"""PURE: token claims + machine facts + now → a Verdict with a stable code.

No I/O, no clock: the caller passes `now` (unix seconds). The CLI, the daemon
and the in-process Checker all end here, so the three ways to ask always give
the same answer. The guards run in a fixed order and the first refusal wins.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from tessera_common.fingerprints import IDENTIFYING_KINDS

# Stable reason codes: public contract, never rename.
ENTITLED = "entitled"
NO_TOKEN = "no-token"  # noqa: S105 (a reason code)
BAD_SIGNATURE = "bad-signature"
WRONG_PRODUCT = "wrong-product"
LEASE_EXPIRED = "lease-expired"
SUBSCRIPTION_ENDED = "subscription-ended"
HOST_MISMATCH = "host-mismatch"
DONGLE_MISSING = "dongle-missing"
DONGLE_REVOKED = "dongle-revoked"
RELEASE_NOT_ENTITLED = "release-not-entitled"
CLOCK_ROLLBACK = "clock-rollback"
REVOKED = "revoked"
ACTIVATION_REBOUND = "activation-rebound"  # the server bound this seat to another agent key
STATE_CORRUPT = "state-corrupt"
STATE_TAMPERED = "state-tampered"
STATE_SYMLINK = "state-symlink"  # a symlink where a state file belongs: never followed
STATE_DIR_UNSAFE = "state-dir-unsafe"  # writable by group or others, or owned by another user
JWKS_UNAVAILABLE = "jwks-unavailable"
INVALID_REQUEST = "invalid-request"
FEATURE_NOT_LICENSED = "feature-not-licensed"  # the product may run, this module of it may not

# Not a code: an `entitled` answer during a subscription's grace days carries this notice
# (and `grace_until`), so the product can tell its user to renew.
SUBSCRIPTION_GRACE = "subscription-grace"

CODES = (
    ENTITLED,
    NO_TOKEN,
    BAD_SIGNATURE,
    WRONG_PRODUCT,
    LEASE_EXPIRED,
    SUBSCRIPTION_ENDED,
    HOST_MISMATCH,
    DONGLE_MISSING,
    DONGLE_REVOKED,
    RELEASE_NOT_ENTITLED,
    CLOCK_ROLLBACK,
    REVOKED,
    ACTIVATION_REBOUND,
    STATE_CORRUPT,
    STATE_TAMPERED,
    STATE_SYMLINK,
    STATE_DIR_UNSAFE,
    JWKS_UNAVAILABLE,
    INVALID_REQUEST,
    FEATURE_NOT_LICENSED,
)

# How far the clock may sit behind the latest time the agent saw (or the
# server's issue time) before we call it a rollback: NTP steps and a VM resumed
# from a snapshot stay inside this, a deliberate date change does not.
ROLLBACK_TOLERANCE = 300.0

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


# NamedTuples, not dataclasses: importing dataclasses (and with it inspect)
# would cost the `check` command a tenth of its start-up budget.
class Verdict(NamedTuple):
    code: str
    detail: str
    grace_until: float | None = None  # set only while a subscription runs on its grace days

    @property
    def ok(self) -> bool:
        return self.code == ENTITLED

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entitled": self.ok, "code": self.code, "detail": self.detail}
        if self.grace_until is not None:
            out["notice"] = SUBSCRIPTION_GRACE
            out["grace_until"] = _iso(self.grace_until)
        return out


class HostClaim(NamedTuple):
    """The token's `host` claim; only identifying components count towards a match."""

    salt: str
    components: frozenset[tuple[str, str]]
    match: int
    identifying: frozenset[tuple[str, str]]
    needed: int  # how many of `identifying` must be on this machine

    @classmethod
    def of(cls, salt: str, components: frozenset[tuple[str, str]], match: int) -> HostClaim:
        identifying = frozenset(c for c in components if c[0] in IDENTIFYING_KINDS)
        # A token issued before descriptive components stopped counting lists them and counted
        # them in `match` (they matched on every machine): take them off, the tolerance stays.
        needed = max(1, match - (len(components) - len(identifying)))
        return cls(salt, components, match, identifying, needed)


class Claims(NamedTuple):
    """The activation token's claims, typed (times in unix seconds)."""

    iss: str
    aud: str
    sub: str
    jti: str
    iat: float
    nbf: float
    exp: float
    kind: str
    model: str
    host: HostClaim
    dongle: str | None
    maint_until: float | None
    use_until: float | None
    features: tuple[str, ...]
    seats: int
    cnf_x: str
    grace_until: float | None = None  # subscriptions: use_until plus the plan's grace days


class ClaimsError(ValueError):
    """A verified token whose claims do not have the agreed shape."""


def rfc3339_to_unix(value: str) -> float:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ClaimsError(f"time {value!r} has no timezone")
    return parsed.timestamp()


def release_to_unix(released: date) -> float:
    """A release date as the instant it starts (00:00 UTC)."""
    return float((released.toordinal() - _EPOCH_ORDINAL) * 86400)


def _number(payload: dict[str, Any], name: str) -> float:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClaimsError(f"claim {name!r} must be a number")
    return float(value)


def _string(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise ClaimsError(f"claim {name!r} must be a non-empty string")
    return value


def _optional_time(payload: dict[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ClaimsError(f"claim {name!r} must be an RFC 3339 string")
    try:
        return rfc3339_to_unix(value)
    except ValueError as exc:
        raise ClaimsError(f"claim {name!r}: {exc}") from None


def claims_from_payload(payload: dict[str, Any]) -> Claims:
    host = payload.get("host")
    if not isinstance(host, dict):
        raise ClaimsError("claim 'host' must be an object")
    raw_components = host.get("components")
    if not isinstance(raw_components, list) or not raw_components:
        raise ClaimsError("claim 'host.components' must be a non-empty list")
    components = set()
    for item in raw_components:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("kind"), str)
            or not isinstance(item.get("digest"), str)
        ):
            raise ClaimsError("claim 'host.components' entries need 'kind' and 'digest'")
        components.add((item["kind"], item["digest"]))
    match = host.get("match")
    salt = host.get("salt")
    if isinstance(match, bool) or not isinstance(match, int) or match < 1 or not isinstance(salt, str):
        raise ClaimsError("claim 'host' needs a string 'salt' and a positive 'match'")
    cnf = payload.get("cnf")
    jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
    if not isinstance(jwk, dict) or not isinstance(jwk.get("x"), str):
        raise ClaimsError("claim 'cnf.jwk' must carry the agent's public key")
    dongle = payload.get("dongle")
    if dongle is not None and not isinstance(dongle, str):
        raise ClaimsError("claim 'dongle' must be a string")
    features = payload.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ClaimsError("claim 'features' must be a list of strings")
    seats = payload.get("seats", 1)
    if isinstance(seats, bool) or not isinstance(seats, int):
        raise ClaimsError("claim 'seats' must be an integer")
    aud = payload.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if not isinstance(aud, str):
        raise ClaimsError("claim 'aud' must be the product code")
    return Claims(
        iss=_string(payload, "iss"),
        aud=aud,
        sub=_string(payload, "sub"),
        jti=_string(payload, "jti"),
        iat=_number(payload, "iat"),
        nbf=_number(payload, "nbf") if "nbf" in payload else _number(payload, "iat"),
        exp=_number(payload, "exp"),
        kind=_string(payload, "kind"),
        model=_string(payload, "model"),
        host=HostClaim.of(salt, frozenset(components), match),
        dongle=dongle,
        maint_until=_optional_time(payload, "maint_until"),
        use_until=_optional_time(payload, "use_until"),
        features=tuple(features),
        seats=seats,
        cnf_x=jwk["x"],
        grace_until=_optional_time(payload, "grace_until"),
    )


def host_matches(host: HostClaim, machine: frozenset[tuple[str, str]]) -> bool:
    """Enough of the token's identifying (kind, digest) pairs are on this machine (PROTOCOL.md).

    A CPU model or a virtualisation label is the same on thousands of machines: a token whose
    host has no identifying component matches no machine at all.
    """
    return bool(host.identifying) and len(host.identifying & machine) >= host.needed


@lru_cache(maxsize=64)
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decide(
    claims: Claims | None,
    *,
    product: str,
    released: float,
    machine: frozenset[tuple[str, str]],
    dongle_present: bool,
    now: float,
    high_water: float,
    revoked: str | None = None,
    revoked_dongles: frozenset[str] = frozenset(),
    feature: str | None = None,
) -> Verdict:
    """May `product`, released at `released`, run on this machine at `now`?

    With `feature`, may it also use that module: only a licence the product
    may run under can answer for its modules, so every other guard comes first
    and `feature-not-licensed` is the last refusal.

    `machine` is this host's (kind, digest) set under the token's salt,
    `high_water` the latest time the agent has seen, `revoked` the server's
    reason when it told us the seat is gone.
    """
    if claims is None:
        return Verdict(NO_TOKEN, "no activation token: run `tessera-agent activate`")
    if claims.aud != product:
        return Verdict(WRONG_PRODUCT, f"the token is for {claims.aud!r}, not {product!r}")
    floor = max(high_water, claims.iat)
    if now < floor - ROLLBACK_TOLERANCE:
        return Verdict(CLOCK_ROLLBACK, f"the clock reads {_iso(now)}, but the agent already saw {_iso(floor)}")
    if claims.model == "dongle" and claims.dongle in revoked_dongles:
        # Named before a plain `revoked`: the administrator learns why (the vendor's signed list, rule 6).
        return Verdict(DONGLE_REVOKED, f"dongle {claims.dongle} was reported lost, stolen or defective")
    if revoked == ACTIVATION_REBOUND:
        return Verdict(
            ACTIVATION_REBOUND,
            "the server bound this seat to another agent key on this machine: run `tessera-agent activate` again",
        )
    if revoked is not None:
        return Verdict(REVOKED, f"the server ended this seat ({revoked})")
    if claims.model == "dongle":
        if not dongle_present:
            return Verdict(DONGLE_MISSING, "the licence dongle is not plugged in")
    elif not host_matches(claims.host, machine):
        host = claims.host
        if not host.identifying:
            return Verdict(HOST_MISMATCH, "the token names no identifying host component: activate again")
        found = len(host.identifying & machine)
        return Verdict(
            HOST_MISMATCH,
            f"{found} of {len(host.identifying)} identifying host components match, {host.needed} needed",
        )
    if now < claims.nbf - ROLLBACK_TOLERANCE:
        return Verdict(CLOCK_ROLLBACK, f"the token is valid only from {_iso(claims.nbf)}")
    if now >= claims.exp:
        return Verdict(LEASE_EXPIRED, f"the lease ended at {_iso(claims.exp)}: refresh with the server")
    grace: float | None = None
    if claims.use_until is not None and now >= claims.use_until:
        if claims.grace_until is None or now >= claims.grace_until:
            return Verdict(SUBSCRIPTION_ENDED, f"the subscription ended at {_iso(claims.use_until)}")
        grace = claims.grace_until  # rule 3: the paid term plus the plan's grace days
    # A subscription includes maintenance for its whole term (DESIGN 2).
    maint_until = claims.maint_until
    if maint_until is None and claims.kind == "subscription":
        maint_until = claims.use_until
    if maint_until is None or released > maint_until:
        until = "no maintenance" if maint_until is None else f"maintenance until {_iso(maint_until)}"
        return Verdict(RELEASE_NOT_ENTITLED, f"this release is newer than the licence's {until}")
    if feature is not None and feature not in claims.features:
        return Verdict(FEATURE_NOT_LICENSED, f"the licence does not include the feature {feature!r}")
    if grace is not None:
        return Verdict(
            ENTITLED,
            f"{SUBSCRIPTION_GRACE}: the subscription ended at {_iso(claims.use_until or grace)}; "
            f"it runs until {_iso(grace)}: renew it",
            grace,
        )
    return Verdict(ENTITLED, f"{claims.kind} licence {claims.sub}, lease until {_iso(claims.exp)}")
