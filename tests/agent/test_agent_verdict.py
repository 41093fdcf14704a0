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
V = ("virtualisation", "none-digest")


def host(*components: tuple[str, str], match: int) -> dict[str, Any]:
    return {"salt": "s", "components": [{"kind": k, "digest": d} for k, d in components], "match": match}


SUBSCRIPTION = {"kind": "subscription", "maint_until": None, "use_until": "2026-09-20T00:00:00Z"}  # NOW - 1 day


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
        pytest.param(payload(), {"machine": frozenset({A, D})}, "host-mismatch", id="two-changed-beyond-tolerance"),
        pytest.param(
            payload(),
            {"machine": frozenset({A, B, C})},
            "entitled",
            id="a-cpu-change-does-not-count",
        ),
        pytest.param(
            payload(host=host(A, D, V, match=2)),
            {"machine": frozenset({("mac", "other"), D, V})},
            "host-mismatch",
            id="descriptive-components-do-not-count-towards-a-match",
        ),
        pytest.param(
            payload(host=host(V, match=1)),
            {"machine": frozenset({V, D})},
            "host-mismatch",
            id="a-host-of-only-virtualisation-none-matches-no-machine",
        ),
        pytest.param(
            payload(host=host(D, V, match=1)),
            {"machine": frozenset({A, B, C, D, V})},
            "host-mismatch",
            id="no-identifying-component-even-on-its-own-machine",
        ),
        pytest.param(
            payload(host=host(A, B, C, match=2)),
            {"machine": frozenset({A, B})},
            "entitled",
            id="identifying-only-token-within-tolerance",
        ),
        pytest.param(
            payload(host=host(A, B, C, match=2)),
            {"machine": frozenset({A, D, V})},
            "host-mismatch",
            id="identifying-only-token-beyond-tolerance",
        ),
        pytest.param(payload(), {"revoked": "activation-rebound"}, "activation-rebound", id="rebound-to-another-key"),
        pytest.param(payload(**SUBSCRIPTION), {}, "subscription-ended", id="term-ended-no-grace"),
        pytest.param(
            payload(**SUBSCRIPTION, grace_until="2026-09-27T00:00:00Z"),
            {"released": release_to_unix(date(2026, 1, 1))},
            "entitled",
            id="term-ended-in-grace",
        ),
        pytest.param(
            payload(**SUBSCRIPTION, grace_until="2026-09-27T00:00:00Z"),
            {"released": release_to_unix(date(2026, 1, 1)), "now": NOW + 6 * DAY},
            "subscription-ended",
            id="grace-over",
        ),
        pytest.param(
            payload(**SUBSCRIPTION, grace_until="2026-09-27T00:00:00Z"),
            {"released": release_to_unix(date(2026, 9, 25))},
            "release-not-entitled",
            id="grace-is-no-maintenance-for-newer-releases",
        ),
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


def verdict_of(claims_payload: dict[str, Any], **kw: Any) -> Any:
    args: dict[str, Any] = {
        "product": "cad-pro",
        "released": release_to_unix(date(2026, 1, 1)),
        "machine": frozenset({A, B, C, D}),
        "dongle_present": False,
        "now": NOW,
        "high_water": NOW - 60,
    } | kw
    return decide(claims_from_payload(claims_payload), **args)


def test_grace_days_are_entitled_with_a_notice_the_product_can_show() -> None:
    verdict = verdict_of(payload(**SUBSCRIPTION, grace_until="2026-09-27T00:00:00Z"))
    assert verdict.ok and verdict.detail.startswith("subscription-grace: ")
    assert verdict.as_dict() | {"detail": ""} == {
        "entitled": True,
        "code": "entitled",
        "detail": "",
        "notice": "subscription-grace",
        "grace_until": "2026-09-27T00:00:00Z",
    }
    # Before the term ends, and without grace: no notice.
    early = {"iat": NOW - 3 * DAY, "nbf": NOW - 3 * DAY}
    running = verdict_of(
        payload(**SUBSCRIPTION, **early, grace_until="2026-09-27T00:00:00Z"), now=NOW - 2 * DAY, high_water=0
    )
    assert running.ok and "notice" not in running.as_dict() and running.grace_until is None
    assert "notice" not in verdict_of(payload()).as_dict()


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
        pytest.param({A, B, C}, 4, True, id="tolerance-zero-cpu-not-counted"),
        pytest.param({A, B, D}, 4, False, id="tolerance-zero-one-identifying-changed"),
        pytest.param({A, B, C, ("mac", "other")}, 3, True, id="replaced-nic"),
        pytest.param({("mac", "a2"), ("disk-serial", "b2"), C, D}, 3, False, id="cpu-change"),
        pytest.param({("mac", "b")}, 1, False, id="same-digest-other-kind"),
    ],
)
def test_host_matching(machine: set[tuple[str, str]], match: int, matches: bool) -> None:
    claim = HostClaim.of("s", frozenset({A, B, C, D}), match)
    assert host_matches(claim, frozenset(machine)) is matches


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


def test_an_ended_or_rebound_seat_is_not_refreshed() -> None:
    delay = schedule.refresh_delay(iat=NOW - 20 * DAY, exp=NOW + 10 * DAY, now=NOW, failures=0, rand=0.0, stopped=True)
    assert delay == schedule.IDLE_POLL


@pytest.mark.parametrize(
    ("use_until", "grace_until", "refreshes"),
    [
        pytest.param(None, None, [15 * DAY, 30 * DAY], id="perpetual-half-lease"),
        pytest.param(NOW + 40 * DAY, None, [15 * DAY, 30 * DAY], id="term-far-off"),
        pytest.param(NOW + 2 * DAY, None, [DAY, 2 * DAY, 17 * DAY], id="day-before-and-at-the-term-end"),
        pytest.param(NOW + 2 * DAY, NOW + 5 * DAY, [DAY, 2 * DAY, 5 * DAY, 20 * DAY], id="and-at-the-end-of-grace"),
    ],
)
def test_refreshes_ahead_of_the_subscription_end(
    use_until: float | None, grace_until: float | None, refreshes: list[float]
) -> None:
    """Successive successful refreshes, each giving a new 30-day lease issued at refresh time."""
    iat, now, seen = NOW, NOW, []
    for _ in refreshes:
        now += schedule.refresh_delay(
            iat=iat, exp=iat + LEASE, now=now, failures=0, rand=0.0, use_until=use_until, grace_until=grace_until
        )
        seen.append(now - NOW)
        iat = now
    assert seen == refreshes


def test_a_term_point_already_passed_does_not_spin() -> None:
    # The server's clock runs behind ours: the new token's iat is still before the term's end.
    delay = schedule.refresh_delay(iat=NOW - 10, exp=NOW - 10 + LEASE, now=NOW, failures=0, rand=0.0, use_until=NOW - 5)
    assert delay == schedule.TERM_OVERDUE
