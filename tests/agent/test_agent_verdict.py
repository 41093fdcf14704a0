from datetime import date
from typing import Any

import pytest

from client_agent import schedule
from client_agent.verdict import (
    CODES,
    ROLLBACK_TOLERANCE,
    ClaimsError,
    HostClaim,
    claims_from_payload,
    decide,
    host_matches,
    release_to_unix,
    rfc3339_to_unix,
)

NOW = 1_790_000_000.0  # 2026-09-21
DAY = 86400.0
A, B, C, D = (("mac", "a"), ("disk-serial", "b"), ("machine-id", "c"), ("cpu-model", "d"))


def payload(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": "http://licences.example",
        "aud": "cad-pro",
        "sub": "licence-1",
        "jti": "activation-1",
        "iat": NOW - DAY,
        "nbf": NOW - DAY,
        "exp": NOW + 29 * DAY,
        "kind": "perpetual",
        "model": "activation",
        "host": {"salt": "s", "components": [{"kind": k, "digest": d} for k, d in (A, B, C, D)], "match": 3},
        "maint_until": "2027-01-01T00:00:00Z",
        "features": [],
        "seats": 1,
        "cnf": {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "agent"}},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def ask(claims_payload: dict[str, Any] | None, **kw: Any) -> str:
    args: dict[str, Any] = {
        "product": "cad-pro",
        "released": release_to_unix(date(2026, 6, 1)),
        "machine": frozenset({A, B, C, D}),
        "dongle_present": False,
        "now": NOW,
        "high_water": NOW - 60,
        "revoked": None,
    }
    args.update(kw)
    claims = claims_from_payload(claims_payload) if claims_payload is not None else None
    return decide(claims, **args).code


@pytest.mark.parametrize(
    ("claims", "kw", "code"),
    [
        pytest.param(payload(), {}, "entitled", id="entitled"),
        pytest.param(None, {}, "no-token", id="no-token"),
        pytest.param(payload(), {"product": "cad-lite"}, "wrong-product", id="wrong-product"),
        pytest.param(payload(), {"now": NOW + 30 * DAY}, "lease-expired", id="lease-expired-at-exp"),
        pytest.param(payload(), {"now": NOW + 29 * DAY - 1}, "entitled", id="lease-last-second"),
        pytest.param(
            payload(kind="subscription", use_until="2026-09-01T00:00:00Z", maint_until=None),
            {"released": release_to_unix(date(2026, 1, 1))},
            "subscription-ended",
            id="subscription-ended",
        ),
        pytest.param(
            payload(kind="subscription", use_until="2026-12-01T00:00:00Z", maint_until=None),
            {},
            "entitled",
            id="subscription-running-includes-maintenance",
        ),
        pytest.param(
            payload(),
            {"machine": frozenset({A, B, C})},
            "entitled",
            id="one-component-changed-within-tolerance",
        ),
        pytest.param(payload(), {"machine": frozenset({A, B})}, "host-mismatch", id="two-changed-beyond-tolerance"),
        pytest.param(payload(), {"machine": frozenset()}, "host-mismatch", id="another-machine"),
        pytest.param(
            payload(model="dongle", dongle="SN1"),
            {"dongle_present": False},
            "dongle-missing",
            id="dongle-unplugged",
        ),
        pytest.param(
            payload(model="dongle", dongle="SN1"),
            {"dongle_present": True, "machine": frozenset()},
            "entitled",
            id="dongle-present-any-host",
        ),
        pytest.param(
            payload(model="dongle", dongle="SN1"),
            {"dongle_present": True, "revoked_dongles": frozenset({"SN1"}), "revoked": "activation-ended"},
            "dongle-revoked",
            id="dongle-on-the-signed-revocation-list",
        ),
        pytest.param(
            payload(model="dongle", dongle="SN1"),
            {"dongle_present": True, "revoked_dongles": frozenset({"SN9"})},
            "entitled",
            id="another-dongle-revoked",
        ),
        pytest.param(
            payload(),
            {"released": release_to_unix(date(2027, 1, 2))},
            "release-not-entitled",
            id="after-maint",
        ),
        pytest.param(payload(), {"released": release_to_unix(date(2027, 1, 1))}, "entitled", id="on-maint-end-day"),
        pytest.param(payload(maint_until=None), {}, "release-not-entitled", id="never-had-maintenance"),
        pytest.param(payload(), {"now": NOW - DAY * 3, "high_water": NOW}, "clock-rollback", id="clock-set-back"),
        pytest.param(
            payload(),
            {"now": NOW - ROLLBACK_TOLERANCE + 1, "high_water": NOW},
            "entitled",
            id="small-step-back-tolerated",
        ),
        pytest.param(
            payload(iat=NOW + DAY, nbf=NOW + DAY),
            {"high_water": 0},
            "clock-rollback",
            id="clock-behind-issue",
        ),
        pytest.param(payload(), {"revoked": "licence-revoked"}, "revoked", id="revoked"),
        pytest.param(
            payload(),
            {"now": NOW - 5 * DAY, "product": "cad-lite"},
            "wrong-product",
            id="product-checked-first",
        ),
    ],
)
def test_decide(claims: dict[str, Any] | None, kw: dict[str, Any], code: str) -> None:
    assert ask(claims, **kw) == code


def test_every_code_is_listed_once() -> None:
    assert len(CODES) == len(set(CODES))
    assert {
        "no-token",
        "bad-signature",
        "wrong-product",
        "lease-expired",
        "subscription-ended",
        "host-mismatch",
        "dongle-missing",
        "release-not-entitled",
        "clock-rollback",
        "revoked",
    } <= set(CODES)


@pytest.mark.parametrize(
    ("machine", "match", "matches"),
    [
        pytest.param({A, B, C, D}, 4, True, id="all"),
        pytest.param({A, B, C}, 4, False, id="tolerance-zero"),
        pytest.param({A, B, C, ("mac", "other")}, 3, True, id="replaced-nic"),
        pytest.param({("mac", "a2"), ("disk-serial", "b2"), C, D}, 3, False, id="cpu-change"),
        pytest.param({("mac", "b")}, 1, False, id="same-digest-other-kind"),
    ],
)
def test_host_matching(machine: set[tuple[str, str]], match: int, matches: bool) -> None:
    host = HostClaim("s", frozenset({A, B, C, D}), match)
    assert host_matches(host, frozenset(machine)) is matches


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"host": None}, "host", id="no-host"),
        pytest.param({"host": {"salt": "s", "components": [], "match": 1}}, "components", id="no-components"),
        pytest.param({"host": {"salt": "s", "components": [{"kind": "mac"}], "match": 1}}, "digest", id="no-digest"),
        pytest.param(
            {"host": {"salt": "s", "components": [{"kind": "a", "digest": "b"}], "match": 0}},
            "match",
            id="match-0",
        ),
        pytest.param({"cnf": None}, "cnf", id="no-cnf"),
        pytest.param({"exp": "tomorrow"}, "exp", id="exp-string"),
        pytest.param({"iat": True}, "iat", id="iat-bool"),
        pytest.param({"maint_until": "2027-01-01"}, "timezone", id="naive-maint"),
        pytest.param({"aud": ["a", "b"]}, "aud", id="two-audiences"),
        pytest.param({"features": "x"}, "features", id="features-string"),
    ],
)
def test_malformed_claims_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ClaimsError, match=message):
        claims_from_payload(payload(**changes))


def test_times_are_utc() -> None:
    assert rfc3339_to_unix("2026-01-01T00:00:00Z") == 1767225600.0
    assert rfc3339_to_unix("2026-01-01T01:00:00+01:00") == 1767225600.0
    assert release_to_unix(date(2026, 1, 1)) == 1767225600.0


LEASE = 30 * DAY


@pytest.mark.parametrize(
    ("now", "failures", "rand", "retry_after", "low", "high"),
    [
        pytest.param(NOW, 0, 0.0, None, 14 * DAY, 14 * DAY, id="half-lease-no-jitter"),
        pytest.param(NOW, 0, 0.999, None, 14 * DAY, 15.5 * DAY, id="half-lease-max-jitter"),
        pytest.param(NOW + 20 * DAY, 0, 0.0, None, 0, 0, id="overdue-now"),
        pytest.param(NOW + 20 * DAY, 1, 0.0, None, 15, 15, id="first-retry-half"),
        pytest.param(NOW + 20 * DAY, 1, 0.999, None, 29.9, 30, id="first-retry-full"),
        pytest.param(NOW + 20 * DAY, 3, 0.999, None, 119, 120, id="third-retry"),
        pytest.param(NOW + 20 * DAY, 30, 0.999, None, 3590, 3600, id="capped-at-an-hour"),
        pytest.param(NOW + 29 * DAY - 400, 30, 0.999, None, 99, 100, id="near-lease-end-tries-more-often"),
        pytest.param(NOW + 20 * DAY, 1, 0.0, 600.0, 600, 600, id="retry-after-honoured"),
    ],
)
def test_refresh_schedule(
    now: float, failures: int, rand: float, retry_after: float | None, low: float, high: float
) -> None:
    delay = schedule.refresh_delay(
        iat=NOW - DAY, exp=NOW - DAY + LEASE, now=now, failures=failures, rand=rand, retry_after=retry_after
    )
    assert low <= delay <= high


def test_no_token_polls() -> None:
    assert schedule.refresh_delay(iat=None, exp=None, now=NOW, failures=0, rand=0.5) == schedule.IDLE_POLL
