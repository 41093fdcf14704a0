"""Table-driven tests of the commercial rules (DESIGN section 3, rules 1-7 and 9)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from server.domain import quotas
from server.domain import terms as rules
from server.domain.access import PERMISSIONS, ROLES, require
from server.domain.audit import GENESIS, Event, event_hash, verify_chain
from server.domain.calendar import add_months, whole_months_between
from server.domain.errors import (
    CancellationNotPossible,
    MaintenanceLapsed,
    PlanInconsistent,
    QuotaExhausted,
    RoleForbidden,
    ValidationFailed,
)


def at(y: int, m: int, d: int, hh: int = 0) -> datetime:
    return datetime(y, m, d, hh, tzinfo=UTC)


def term(start: datetime, months: int = 12, origin: str = "included", **kw: object) -> rules.Term:
    return rules.Term(start, add_months(start, months), origin, **kw)  # type: ignore[arg-type]


YEARLY = rules.RenewalPolicy()
MONTHLY = rules.RenewalPolicy(rule=rules.MONTHLY_AFTER_FIRST_YEAR)


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        pytest.param(at(2027, 1, 31), 1, at(2027, 2, 28), id="31-jan-plus-1-month"),
        pytest.param(at(2028, 1, 31), 1, at(2028, 2, 29), id="31-jan-leap-year"),
        pytest.param(at(2028, 2, 29), 12, at(2029, 2, 28), id="leap-day-plus-a-year"),
        pytest.param(at(2027, 3, 31), -1, at(2027, 2, 28), id="back-one-month-to-february"),
        pytest.param(at(2027, 12, 15), 1, at(2028, 1, 15), id="over-new-year"),
        pytest.param(at(2027, 5, 1), -3, at(2027, 2, 1), id="notice-three-months-back"),
    ],
)
def test_calendar_months(start: datetime, months: int, expected: datetime) -> None:
    assert add_months(start, months) == expected


@pytest.mark.parametrize(
    ("start", "end", "months"),
    [
        pytest.param(at(2027, 1, 1), at(2027, 1, 1), 0, id="same-moment"),
        pytest.param(at(2027, 1, 1), at(2027, 1, 31), 0, id="not-a-whole-month"),
        pytest.param(at(2027, 1, 1), at(2027, 2, 1), 1, id="one-month"),
        pytest.param(at(2027, 1, 31), at(2027, 2, 28), 1, id="31-jan-to-28-feb"),
        pytest.param(at(2027, 1, 15), at(2027, 7, 14, 23), 5, id="an-hour-short-of-six"),
        pytest.param(at(2027, 1, 15), at(2028, 7, 15), 18, id="eighteen"),
        pytest.param(at(2027, 5, 1), at(2027, 1, 1), 0, id="backwards-is-zero"),
    ],
)
def test_whole_months_between(start: datetime, end: datetime, months: int) -> None:
    assert whole_months_between(start, end) == months


# -- rule 1: cancellation notice -------------------------------------------------

RENEWS = at(2028, 1, 1)  # the included year 2027 ends; the next term would start here


@pytest.mark.parametrize(
    ("policy", "cancelled", "effective", "in_time"),
    [
        pytest.param(YEARLY, at(2027, 9, 30), RENEWS, True, id="yearly-well-before-notice"),
        pytest.param(YEARLY, at(2027, 10, 1), RENEWS, True, id="yearly-exactly-three-months-before"),
        # The deadline is a calendar day (rule 9): any time on it is in time; the next day is too late.
        pytest.param(YEARLY, at(2027, 10, 1, 23), RENEWS, True, id="yearly-late-on-the-deadline-day"),
        pytest.param(YEARLY, at(2027, 10, 2), at(2029, 1, 1), False, id="yearly-the-day-after-the-deadline"),
        pytest.param(YEARLY, at(2027, 12, 31), at(2029, 1, 1), False, id="yearly-last-day"),
        pytest.param(MONTHLY, at(2027, 12, 1), RENEWS, True, id="monthly-one-calendar-month-before"),
        pytest.param(MONTHLY, at(2027, 12, 2), at(2028, 2, 1), False, id="monthly-too-late-one-more-month"),
    ],
)
def test_cancellation_notice(
    policy: rules.RenewalPolicy, cancelled: datetime, effective: datetime, in_time: bool
) -> None:
    outcome = rules.cancel([term(at(2027, 1, 1))], policy, cancelled)
    assert (outcome.effective, outcome.in_time) == (effective, in_time)


def test_notice_months_come_from_the_plan() -> None:
    six = rules.RenewalPolicy(notice_months=6)
    assert rules.cancel([term(at(2027, 1, 1))], six, at(2027, 7, 1)).in_time
    assert not rules.cancel([term(at(2027, 1, 1))], six, at(2027, 7, 2)).in_time


@pytest.mark.parametrize(
    ("terms", "when"),
    [
        pytest.param([], at(2027, 1, 1), id="no-terms"),
        pytest.param([term(at(2025, 1, 1))], at(2027, 1, 1), id="already-lapsed"),
        pytest.param([term(at(2027, 1, 1), auto_renew=False)], at(2027, 2, 1), id="already-cancelled-in-time"),
        pytest.param([term(at(2027, 1, 1), cancelled_at=at(2027, 12, 1))], at(2027, 12, 2), id="already-too-late"),
    ],
)
def test_nothing_to_cancel(terms: list[rules.Term], when: datetime) -> None:
    with pytest.raises(CancellationNotPossible):
        rules.cancel(terms, YEARLY, when)


# -- rule 1: renewals due ---------------------------------------------------------


@pytest.mark.parametrize(
    ("terms", "policy", "now", "expected"),
    [
        pytest.param([term(at(2027, 1, 1))], YEARLY, at(2027, 12, 31, 23), [], id="not-yet"),
        pytest.param(
            [term(at(2027, 1, 1))], YEARLY, at(2028, 1, 1), [(at(2028, 1, 1), at(2029, 1, 1), True)], id="at-the-end"
        ),
        pytest.param(
            [term(at(2027, 1, 1))],
            YEARLY,
            at(2029, 6, 1),
            [(at(2028, 1, 1), at(2029, 1, 1), True), (at(2029, 1, 1), at(2030, 1, 1), True)],
            id="catches-up-two-years",
        ),
        pytest.param([term(at(2027, 1, 1), auto_renew=False)], YEARLY, at(2029, 1, 1), [], id="cancelled-in-time"),
        pytest.param(
            [term(at(2027, 1, 1), cancelled_at=at(2027, 12, 1))],
            YEARLY,
            at(2030, 1, 1),
            [(at(2028, 1, 1), at(2029, 1, 1), False)],
            id="late-cancellation-one-more-term-only",
        ),
        pytest.param(
            [term(at(2027, 1, 31))],
            MONTHLY,
            at(2028, 3, 31),
            # Anchored to the contract's start day, 31 January: never 29 March, 29 April (the old drift).
            [
                (at(2028, 1, 31), at(2028, 2, 29), True),
                (at(2028, 2, 29), at(2028, 3, 31), True),
                (at(2028, 3, 31), at(2028, 4, 30), True),
            ],
            id="monthly-after-the-first-year-month-ends",
        ),
    ],
)
def test_due_renewals(
    terms: list[rules.Term], policy: rules.RenewalPolicy, now: datetime, expected: list[tuple[datetime, datetime, bool]]
) -> None:
    assert [(d.start, d.end, d.auto_renew) for d in rules.due_renewals(terms, policy, now)] == expected


# -- rule 2: entitlement -------------------------------------------------------------


@pytest.mark.parametrize(
    ("released", "maint_until", "entitled"),
    [
        pytest.param(date(2027, 12, 31), at(2028, 1, 1), True, id="day-before-the-end"),
        pytest.param(date(2028, 1, 1), at(2028, 1, 1), True, id="on-the-last-day"),
        pytest.param(date(2028, 1, 2), at(2028, 1, 1), False, id="after-the-end"),
        pytest.param(date(2020, 1, 1), None, False, id="no-maintenance-ever"),
    ],
)
def test_entitlement(released: date, maint_until: datetime | None, entitled: bool) -> None:
    assert rules.entitled(released, maint_until) is entitled


def test_lapse_and_extension() -> None:
    terms = [term(at(2027, 1, 1))]
    assert not rules.is_lapsed(terms, at(2027, 12, 31))
    assert rules.is_lapsed(terms, at(2028, 1, 1))  # half-open: the end is already outside
    assert rules.extension_start(terms, at(2027, 6, 1)) == at(2028, 1, 1)
    with pytest.raises(MaintenanceLapsed):
        rules.extension_start(terms, at(2028, 1, 1))


# -- rule 7: reinstatement ----------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "price", "months", "fee"),
    [
        pytest.param(rules.BACK_FEES, 120_000, 7, 14_000, id="seed-001-price-over-60-times-months"),
        pytest.param(rules.BACK_FEES, 100_000, 1, 1_666, id="rounds-down-to-the-cent"),
        pytest.param(rules.BACK_FEES, 120_000, 0, 0, id="not-a-whole-month-yet"),
        pytest.param(rules.FULL_PRICE, 120_000, 7, 120_000, id="full-price"),
        pytest.param(rules.NO_FEE, 120_000, 30, 0, id="free"),
    ],
)
def test_reinstatement_fee(rule: str, price: int, months: int, fee: int) -> None:
    assert rules.reinstatement_fee(rule, price, months) == fee


def test_reinstatement_refuses_nonsense() -> None:
    with pytest.raises(ValidationFailed):
        rules.reinstatement_fee(rules.BACK_FEES, 100, -1)
    with pytest.raises(ValidationFailed):
        rules.reinstatement_fee("half-price", 100, 1)


def test_lapsed_months_counts_whole_months_since_the_last_term() -> None:
    terms = [term(at(2027, 1, 31))]
    # The term ends 31 January 2028; a calendar month later is 29 February (a leap year).
    assert rules.lapsed_months(terms, at(2028, 2, 28, 23)) == 0
    assert rules.lapsed_months(terms, at(2028, 2, 29)) == 1
    assert rules.lapsed_months(terms, at(2028, 3, 31)) == 2
    assert rules.lapsed_months(terms, at(2027, 6, 1)) == 0


# -- rules 4-6: quotas and charges ------------------------------------------------------

TERM = term(at(2027, 1, 1))
WINDOW = quotas.quota_window(TERM, None)


@pytest.mark.parametrize(
    ("limit", "used", "refused"),
    [
        pytest.param(None, 1_000, False, id="unlimited-by-default"),
        pytest.param(3, 2, False, id="one-left"),
        pytest.param(3, 3, True, id="used-up"),
        pytest.param(0, 0, True, id="none-allowed"),
    ],
)
def test_deactivation_quota(limit: int | None, used: int, refused: bool) -> None:
    if refused:
        with pytest.raises(QuotaExhausted) as caught:
            quotas.check_deactivation(limit, used, WINDOW)
        assert caught.value.extra["resets_at"] == TERM.end.isoformat()
    else:
        quotas.check_deactivation(limit, used, WINDOW)


@pytest.mark.parametrize(
    ("current", "approved", "free", "price", "expected"),
    [
        pytest.param(TERM, 0, 1, None, ("free", 0), id="first-change-in-term-free"),
        pytest.param(TERM, 1, 1, 25_000, ("charged", 25_000), id="second-change-charged"),
        pytest.param(TERM, 1, 2, 25_000, ("free", 0), id="plan-grants-two-free"),
        pytest.param(None, 0, 1, 25_000, ("charged", 25_000), id="no-maintenance-nothing-free"),
        pytest.param(TERM, 1, 1, None, None, id="second-change-refused-when-not-sold"),
        pytest.param(None, 0, 1, None, None, id="no-maintenance-not-sold"),
    ],
)
def test_host_change_charge(
    current: rules.Term | None, approved: int, free: int, price: int | None, expected: tuple[str, int] | None
) -> None:
    window = quotas.quota_window(current, TERM.end)
    if expected is None:
        with pytest.raises(QuotaExhausted):
            quotas.host_change_charge(current, approved, free, price, window)
    else:
        charge = quotas.host_change_charge(current, approved, free, price, window)
        assert (charge.kind, charge.amount_cents) == expected


@pytest.mark.parametrize(
    ("current", "expected"),
    [pytest.param(TERM, ("free", 0), id="maintenance-active"), pytest.param(None, ("charged", 9_900), id="lapsed")],
)
def test_dongle_replacement(current: rules.Term | None, expected: tuple[str, int]) -> None:
    charge = quotas.dongle_replacement_charge(current, 9_900)
    assert (charge.kind, charge.amount_cents) == expected


# -- roles ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "action", "allowed"),
    [
        ("customer-user", "users:manage", False),
        ("customer-admin", "users:manage", True),
        ("customer-user", "transfer:request", True),
        ("customer-admin", "transfer:decide", False),
        ("support", "transfer:decide", True),
        ("reseller", "licence:renew", True),
        ("customer-admin", "licence:renew", False),
        ("support", "licence:issue", False),
        ("reseller", "audit:read", False),
        ("admin", "audit:read", True),
    ],
)
def test_permissions(role: str, action: str, allowed: bool) -> None:
    if allowed:
        require(role, action)
    else:
        with pytest.raises(RoleForbidden):
            require(role, action)


def test_admin_may_do_everything_but_ask_for_transfers() -> None:
    assert {a for a, roles in PERMISSIONS.items() if "admin" not in roles} == {"transfer:request"}
    assert set(ROLES) == set().union(*PERMISSIONS.values())


# -- the audit chain -----------------------------------------------------------------------


def _chain(n: int) -> list[tuple[Event, str]]:
    out, previous = [], GENESIS
    for seq in range(1, n + 1):
        event = Event("c", seq, at(2027, 1, 1) + timedelta(minutes=seq), "admin:x", "a", f"s{seq}", {"n": seq})
        previous = event_hash(previous, event)
        out.append((event, previous))
    return out


def test_an_intact_chain_verifies() -> None:
    events = _chain(4)
    assert verify_chain("c", events, (4, events[-1][1])) == []


def test_an_edited_event_breaks_the_chain() -> None:
    events = _chain(4)
    edited = Event("c", 2, events[1][0].at, "admin:x", "a", "s2", {"n": 999})
    events[1] = (edited, events[1][1])
    assert [b.seq for b in verify_chain("c", events, (4, events[-1][1]))] == [2]


def test_a_deleted_event_breaks_the_chain() -> None:
    events = _chain(4)
    head = (4, events[-1][1])
    assert verify_chain("c", events[:1] + events[2:], head)  # a gap in the middle
    assert verify_chain("c", events[:3], head)  # the last one removed: the head disagrees


@pytest.mark.parametrize(
    ("months", "cap", "fee"),
    [(26, None, 120_000 * 26 // 60), (26, 12, 120_000 * 12 // 60), (6, 12, 120_000 * 6 // 60), (26, 0, 0)],
)
def test_a_plan_may_cap_the_back_fee(months: int, cap: int | None, fee: int) -> None:
    assert rules.reinstatement_fee(rules.BACK_FEES, 120_000, months, cap_months=cap) == fee


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"back_fee_cap_months": -1}, "back_fee_cap_months"),
        ({"kind": "subscription", "maintenance_mandatory": True}, "maintenance_mandatory"),
    ],
)
def test_nonsense_new_plan_settings_are_named(values: dict[str, object], setting: str) -> None:
    with pytest.raises(PlanInconsistent) as refused:
        rules.check_plan(values)
    assert refused.value.extra["setting"] == setting
