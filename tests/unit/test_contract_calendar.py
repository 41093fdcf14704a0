"""The contract calendar, table by table: terms anchored to the start day, deadlines as calendar days in a
business time zone, received-on, working days, quotas per maintenance year, lapses, grace and plans."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from server.domain import quotas, support
from server.domain import terms as rules
from server.domain.calendar import BusinessCalendar, add_months, calendar_of
from server.domain.errors import LicenceExpired, PlanInconsistent, ValidationFailed
from server.domain.lease import lease_for

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
AMS = calendar_of(AMSTERDAM)
UTC_CAL = BusinessCalendar()


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0, zone: object = UTC) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=zone).astimezone(UTC)  # type: ignore[arg-type]


def chain(start: datetime, *months: int, zone: object = UTC) -> list[rules.Term]:
    """Terms that follow one another, each ending on the contract's boundary."""
    out, end, total = [], start, 0
    for n in months:
        total += n
        following = add_months(start, total, zone)  # type: ignore[arg-type]
        out.append(rules.Term(end, following, "renewal"))
        end = following
    return out


MONTHLY = rules.RenewalPolicy(rule=rules.MONTHLY_AFTER_FIRST_YEAR)
MONTHLY_004 = rules.RenewalPolicy(rule=rules.MONTHLY_AFTER_FIRST_YEAR, processing_days=2)
YEARLY = rules.RenewalPolicy()
EVERY_MONTH = rules.RenewalPolicy(term_months=1, notice_months=1)


# -- terms anchored to the contract's start day ---------------------------------------------


@pytest.mark.parametrize(
    ("first", "policy", "now", "ends"),
    [
        pytest.param(
            rules.Term(at(2027, 1, 31), at(2027, 2, 28), "subscription"),
            EVERY_MONTH,
            at(2027, 5, 31),
            [at(2027, 3, 31), at(2027, 4, 30), at(2027, 5, 31), at(2027, 6, 30)],
            id="31-january-monthly-28-feb-31-mar-30-apr-31-may",
        ),
        pytest.param(
            rules.Term(at(2028, 1, 31), at(2028, 2, 29), "subscription"),
            EVERY_MONTH,
            at(2028, 3, 31),
            [at(2028, 3, 31), at(2028, 4, 30)],
            id="31-january-in-a-leap-year-29-feb-then-31-mar",
        ),
        pytest.param(
            rules.Term(at(2024, 2, 29), at(2025, 2, 28), "included"),
            YEARLY,
            at(2028, 1, 1),
            [at(2026, 2, 28), at(2027, 2, 28), at(2028, 2, 29)],
            id="29-february-yearly-returns-in-2028",
        ),
        pytest.param(
            rules.Term(at(2027, 1, 31), at(2028, 1, 31), "included"),
            MONTHLY,
            at(2028, 3, 1),
            [at(2028, 2, 29), at(2028, 3, 31)],
            id="004-one-year-then-monthly-from-31-january",
        ),
    ],
)
def test_renewals_end_on_the_contract_boundaries(
    first: rules.Term, policy: rules.RenewalPolicy, now: datetime, ends: list[datetime]
) -> None:
    assert [d.end for d in rules.due_renewals([first], policy, now)] == ends


def test_terms_that_drifted_stay_billed_and_the_next_returns_to_the_start_day() -> None:
    # Computed by the old arithmetic from the previous end: 31 Jan, 28 Feb, 28 Mar, 28 Apr.
    drifted = [
        rules.Term(at(2027, 1, 31), at(2027, 2, 28), "subscription"),
        rules.Term(at(2027, 2, 28), at(2027, 3, 28), "subscription"),
        rules.Term(at(2027, 3, 28), at(2027, 4, 28), "subscription"),
    ]
    due = rules.due_renewals(drifted, EVERY_MONTH, at(2027, 5, 31))
    assert [(d.start, d.end) for d in due] == [(at(2027, 4, 28), at(2027, 5, 31)), (at(2027, 5, 31), at(2027, 6, 30))]


def test_a_reinstatement_starts_a_new_contract_with_its_own_anchor() -> None:
    old = rules.Term(at(2025, 1, 31), at(2026, 1, 31), "included")
    reinstated = rules.Term(at(2026, 6, 15), at(2027, 6, 15), "reinstatement")
    assert rules.contract_start([old, reinstated]) == at(2026, 6, 15)
    assert rules.contract_start([old, *chain(at(2026, 1, 31), 12, 12)]) == at(2025, 1, 31)


def test_months_are_counted_on_the_business_wall_clock() -> None:
    # Bought at 00:30 on 31 January in Amsterdam (23:30 UTC on the 30th): its month ends on 28 February there.
    bought = at(2027, 1, 31, 0, 30, zone=AMSTERDAM)
    assert add_months(bought, 1, AMSTERDAM) == at(2027, 2, 28, 0, 30, zone=AMSTERDAM)
    assert add_months(bought, 1) == at(2027, 2, 28, 23, 30)  # in UTC it would be 1 March in Amsterdam
    # Across the change to summer time the wall clock stays at 00:30.
    assert add_months(bought, 3, AMSTERDAM) == at(2027, 4, 30, 0, 30, zone=AMSTERDAM)


# -- deadlines: calendar days in the business time zone -----------------------------------------

# A yearly contract from 31 January 2027 in Amsterdam: it renews on 31 January 2028, so with three months'
# notice the deadline is 31 October 2027, the day summer time ends (03:00 CEST becomes 02:00 CET).
AMS_YEAR = rules.Term(at(2027, 1, 31, zone=AMSTERDAM), at(2028, 1, 31, zone=AMSTERDAM), "included")


@pytest.mark.parametrize(
    ("calendar", "cancelled", "in_time"),
    [
        pytest.param(AMS, at(2027, 10, 30, 23, 59, zone=AMSTERDAM), True, id="the-day-before"),
        pytest.param(AMS, at(2027, 10, 31, 0, 0, zone=AMSTERDAM), True, id="deadline-day-00-00-dst-change"),
        pytest.param(AMS, at(2027, 10, 31, 23, 59, zone=AMSTERDAM), True, id="deadline-day-23-59-dst-change"),
        pytest.param(AMS, at(2027, 10, 31, 15, 0), True, id="issue-example-15-00-utc-on-the-deadline-day"),
        pytest.param(AMS, at(2027, 11, 1, 0, 0, zone=AMSTERDAM), False, id="the-next-day-00-00"),
        pytest.param(AMS, at(2027, 10, 31, 23, 30), False, id="23-30-utc-is-already-1-november-in-amsterdam"),
        pytest.param(UTC_CAL, at(2027, 10, 30, 23, 30), True, id="utc-calendar-the-term-ends-30-january-in-utc"),
    ],
)
def test_the_whole_deadline_day_counts(calendar: BusinessCalendar, cancelled: datetime, in_time: bool) -> None:
    outcome = rules.cancel([AMS_YEAR], YEARLY, cancelled, calendar=calendar)
    assert outcome.in_time is in_time
    assert outcome.effective == (AMS_YEAR.end if in_time else at(2029, 1, 31, zone=AMSTERDAM))
    if calendar is AMS:
        assert outcome.deadline == date(2027, 10, 31)


@pytest.mark.parametrize(
    ("received", "recorded", "outcome"),
    [
        pytest.param(date(2027, 10, 31), at(2027, 11, 5, 10), True, id="letter-received-on-the-deadline-day"),
        pytest.param(date(2027, 11, 1), at(2027, 11, 5, 10), False, id="letter-received-a-day-late"),
        pytest.param(date(2027, 11, 6), at(2027, 11, 5, 10), ValidationFailed, id="received-in-the-future"),
        pytest.param(date(2027, 1, 30), at(2027, 11, 5, 10), ValidationFailed, id="received-before-the-term"),
    ],
)
def test_received_on(received: date, recorded: datetime, outcome: bool | type[Exception]) -> None:
    if isinstance(outcome, bool):
        result = rules.cancel([AMS_YEAR], YEARLY, recorded, received_on=received, calendar=AMS)
        assert (result.in_time, result.received_on, result.requested) == (outcome, received, recorded)
    else:
        with pytest.raises(outcome):
            rules.cancel([AMS_YEAR], YEARLY, recorded, received_on=received, calendar=AMS)


# 004: a first year from 1 March 2026, then monthly. It renews on Monday 1 March 2027; one calendar month's
# notice makes the deadline Monday 1 February, and processing takes two working days.
FIRST_YEAR = rules.Term(at(2026, 3, 1), at(2027, 3, 1), "included")


@pytest.mark.parametrize(
    ("holidays", "received", "processed", "in_time"),
    [
        pytest.param((), date(2027, 1, 27), date(2027, 1, 29), True, id="wednesday-processed-friday"),
        pytest.param((), date(2027, 1, 28), date(2027, 2, 1), True, id="thursday-over-the-weekend-to-monday"),
        pytest.param((), date(2027, 1, 29), date(2027, 2, 2), False, id="friday-over-the-weekend-too-late"),
        pytest.param((), date(2027, 1, 30), date(2027, 2, 2), False, id="saturday-counts-from-monday"),
        pytest.param((date(2027, 1, 29),), date(2027, 1, 28), date(2027, 2, 2), False, id="a-holiday-friday"),
    ],
)
def test_processing_working_days(holidays: tuple[date, ...], received: date, processed: date, in_time: bool) -> None:
    calendar = calendar_of(UTC, holidays)
    outcome = rules.cancel([FIRST_YEAR], MONTHLY_004, at(2027, 2, 1, 9), received_on=received, calendar=calendar)
    assert (outcome.deadline, outcome.processed_on, outcome.in_time) == (date(2027, 2, 1), processed, in_time)
    assert outcome.effective == (at(2027, 3, 1) if in_time else at(2027, 4, 1))


def test_late_in_the_month_with_processing_two_more_months_run() -> None:
    # Monthly since 1 February 2027; received Wednesday 31 March, processed Friday 2 April: too late for the
    # renewal on 1 April (deadline 1 March) and for 1 May (deadline 1 April): the contract ends on 1 June.
    terms = chain(at(2026, 2, 1), 12, 1, 1)
    assert terms[-1].end == at(2027, 4, 1)
    outcome = rules.cancel(terms, MONTHLY_004, at(2027, 3, 31, 12), calendar=UTC_CAL)
    assert (outcome.in_time, outcome.processed_on, outcome.effective) == (False, date(2027, 4, 2), at(2027, 6, 1))
    cancelled = [*terms[:-1], rules.Term(terms[-1].start, terms[-1].end, "renewal", True, at(2027, 3, 31, 12),
                                         date(2027, 3, 31))]  # fmt: skip
    due = rules.due_renewals(cancelled, MONTHLY_004, at(2027, 7, 1))
    assert [(d.end, d.auto_renew) for d in due] == [(at(2027, 5, 1), True), (at(2027, 6, 1), False)]


def test_one_calendar_month_notice_on_monthly_terms_is_valid() -> None:
    rules.check_plan({"renewal_rule": rules.YEARLY, "term_months": 1, "notice_months": 1})
    terms = chain(at(2027, 3, 1), 1)
    # Cancelled on the term's first day (the deadline for its renewal): it ends with this term; a day later,
    # one more month runs.
    assert rules.cancel(terms, EVERY_MONTH, at(2027, 3, 1, 18)).in_time
    assert rules.cancel(terms, EVERY_MONTH, at(2027, 3, 2)).effective == at(2027, 5, 1)
    # After a 28-day February the notice day falls before the term began: only the following renewal is reachable.
    february = [rules.Term(at(2027, 1, 31), at(2027, 2, 28), "renewal")]
    assert rules.cancel(february, EVERY_MONTH, at(2027, 1, 31, 18)).effective == at(2027, 3, 31)


# -- quotas per maintenance year ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("terms", "now", "year"),
    [
        pytest.param(
            [rules.Term(at(2027, 1, 15), at(2030, 1, 15), "renewal")],
            at(2028, 6, 1),
            (at(2028, 1, 15), at(2029, 1, 15)),
            id="3-year-extension-second-year",
        ),
        pytest.param(
            [rules.Term(at(2027, 1, 15), at(2030, 1, 15), "renewal")],
            at(2029, 12, 31),
            (at(2029, 1, 15), at(2030, 1, 15)),
            id="3-year-extension-third-year",
        ),
        pytest.param(
            chain(at(2027, 1, 31), *[1] * 20),
            at(2028, 2, 15),
            (at(2028, 1, 31), at(2029, 1, 31)),
            id="monthly-plan-twelve-months-from-the-start-day",
        ),
        pytest.param(
            chain(at(2027, 1, 31), *[1] * 20),
            at(2028, 1, 30),
            (at(2027, 1, 31), at(2028, 1, 31)),
            id="monthly-plan-last-day-of-the-first-year",
        ),
        pytest.param(chain(at(2027, 1, 15), 12), at(2028, 2, 1), None, id="no-maintenance-no-year"),
    ],
)
def test_maintenance_years(terms: list[rules.Term], now: datetime, year: tuple[datetime, datetime] | None) -> None:
    found = rules.maintenance_year(terms, now)
    assert (None if found is None else (found.start, found.end)) == year


def test_a_3_year_extension_has_three_free_host_changes_one_per_year() -> None:
    terms = [rules.Term(at(2027, 1, 15), at(2030, 1, 15), "renewal")]
    charges = []
    approved: list[datetime] = []
    for when in (at(2027, 3, 1), at(2027, 9, 1), at(2028, 3, 1), at(2029, 3, 1)):
        year = rules.maintenance_year(terms, when)
        assert year is not None
        used = sum(1 for a in approved if year.start <= a < year.end)
        window = quotas.quota_window(year, None, continues=rules.runs_through(terms, year.end))
        charges.append(quotas.host_change_charge(year, used, 1, 25_000, window).kind)
        approved.append(when)
    assert charges == ["free", "charged", "free", "free"]


def test_resets_at_is_the_end_of_the_year_when_maintenance_goes_on() -> None:
    running = chain(at(2027, 1, 31), 12)
    year = rules.maintenance_year(running, at(2027, 6, 1))
    assert year is not None
    assert quotas.quota_window(year, None, continues=rules.runs_through(running, year.end)).resets_at == at(2028, 1, 31)
    cancelled = [rules.Term(running[0].start, running[0].end, "included", auto_renew=False)]
    assert rules.runs_through(cancelled, at(2028, 1, 31))  # paid up to the end of the year
    monthly_cancelled = [rules.Term(at(2027, 1, 31), at(2027, 2, 28), "renewal", auto_renew=False)]
    year = rules.maintenance_year(monthly_cancelled, at(2027, 2, 1))
    assert year is not None and not rules.runs_through(monthly_cancelled, year.end)
    assert quotas.quota_window(year, None, continues=False).resets_at is None


# -- lapse and reinstatement ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("months", "now", "perpetual_fee"),
    [
        pytest.param(0, at(2028, 2, 14), 0, id="lapsed-0-months"),
        pytest.param(1, at(2028, 2, 15), 2_000, id="lapsed-1-month"),
        pytest.param(59, at(2032, 12, 15), 118_000, id="lapsed-59-months"),
        pytest.param(60, at(2033, 1, 15), 120_000, id="lapsed-60-months"),
        pytest.param(61, at(2033, 2, 15), 122_000, id="lapsed-61-months"),
    ],
)
def test_lapsed_months_and_back_fees(months: int, now: datetime, perpetual_fee: int) -> None:
    terms = [rules.Term(at(2027, 1, 15), at(2028, 1, 15), "included")]
    assert rules.lapsed_months(terms, now) == months
    perpetual = rules.default_reinstatement_rule("perpetual")
    assert rules.reinstatement_fee(perpetual, 120_000, months) == perpetual_fee
    # A lapsed subscription restarts with its new term's fee and no back-fee (000), whatever the gap.
    subscription = rules.default_reinstatement_rule("subscription")
    assert rules.reinstatement_fee(subscription, 120_000, months) == 0


# -- grace reaches the agent ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "grace", "now", "grace_until", "expires"),
    [
        pytest.param("subscription", 14, at(2028, 1, 10), at(2028, 1, 29), at(2028, 1, 29), id="before-the-end"),
        pytest.param("subscription", 14, at(2028, 1, 20), at(2028, 1, 29), at(2028, 1, 29), id="during-grace"),
        pytest.param("subscription", 0, at(2028, 1, 10), None, at(2028, 1, 15), id="no-grace-no-claim"),
        pytest.param("perpetual", 14, at(2028, 1, 10), None, at(2028, 2, 9), id="perpetual-never"),
    ],
)
def test_grace_until(kind: str, grace: int, now: datetime, grace_until: datetime | None, expires: datetime) -> None:
    use_until = at(2028, 1, 15) if kind == "subscription" else None
    lease = lease_for(kind=kind, lease_days=30, grace_days=grace, maint_until=at(2028, 1, 15), use_until=use_until,
                      now=now)  # fmt: skip
    assert (lease.grace_until, lease.expires) == (grace_until, expires)


def test_after_grace_no_token() -> None:
    with pytest.raises(LicenceExpired):
        lease_for(kind="subscription", lease_days=30, grace_days=14, maint_until=at(2028, 1, 15),
                  use_until=at(2028, 1, 15), now=at(2028, 1, 29) + timedelta(seconds=1))  # fmt: skip


# -- plans that make sense ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        pytest.param({"term_months": 12, "notice_months": 13}, "notice_months", id="notice-longer-than-the-term"),
        pytest.param({"term_months": 1, "notice_months": 2}, "notice_months", id="notice-longer-than-a-month"),
        pytest.param({"price_cents": -1}, "price_cents", id="negative-price"),
        pytest.param({"renewal_price_cents": -100}, "renewal_price_cents", id="negative-renewal-price"),
        pytest.param({"host_change_price_cents": -5}, "host_change_price_cents", id="negative-host-change-price"),
        pytest.param({"term_months": 12, "grace_days": 366}, "grace_days", id="grace-longer-than-a-year"),
        pytest.param(
            {"term_months": 1, "notice_months": 1, "grace_days": 29}, "grace_days", id="grace-longer-than-february"
        ),
        pytest.param(
            {"renewal_rule": rules.MONTHLY_AFTER_FIRST_YEAR, "grace_days": 30},
            "grace_days",
            id="grace-longer-than-a-monthly-term",
        ),
        pytest.param({"processing_days": -1}, "processing_days", id="negative-processing-days"),
    ],
)
def test_nonsense_plans_are_refused_naming_the_setting(values: dict[str, int | str], setting: str) -> None:
    with pytest.raises(PlanInconsistent) as refused:
        rules.check_plan(values)
    assert refused.value.extra["setting"] == setting and setting in refused.value.detail
    assert refused.value.code == "plan-inconsistent"


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"term_months": 12, "notice_months": 12}, id="notice-equal-to-the-term"),
        pytest.param(
            {"renewal_rule": rules.MONTHLY_AFTER_FIRST_YEAR, "notice_months": 3, "processing_days": 2},
            id="004-monthly-after-the-first-year",
        ),
        pytest.param({"term_months": 1, "notice_months": 1, "grace_days": 28}, id="grace-of-a-february"),
    ],
)
def test_sensible_plans_pass(values: dict[str, int | str]) -> None:
    rules.check_plan(values)


# -- support eligibility (rule 10) ------------------------------------------------------------------

OLD = support.Release("2025.1", date(2025, 3, 1), None)
LATEST = support.Release("2026.1", date(2026, 3, 1), None)
LTS = support.Release("2024.2-lts", date(2024, 9, 1), date(2027, 9, 1))
FUTURE = support.Release("2099.1", date(2099, 1, 1), None)
RELEASES = [OLD, LATEST, LTS, FUTURE]
MAINTAINED = [rules.Term(at(2027, 1, 1), at(2028, 1, 1), "included")]


@pytest.mark.parametrize(
    ("named", "terms", "release", "today", "codes"),
    [
        pytest.param(True, MAINTAINED, LATEST, date(2027, 6, 1), [], id="eligible-latest-release"),
        pytest.param(True, MAINTAINED, LTS, date(2027, 9, 1), [], id="eligible-until-end-of-support-day"),
        pytest.param(True, MAINTAINED, LTS, date(2027, 9, 2), ["release-out-of-support"], id="after-end-of-support"),
        pytest.param(True, MAINTAINED, OLD, date(2027, 6, 1), ["release-out-of-support"], id="only-the-latest"),
        pytest.param(True, MAINTAINED, FUTURE, date(2027, 6, 1), ["release-out-of-support"], id="not-out-yet"),
        pytest.param(False, MAINTAINED, LATEST, date(2027, 6, 1), ["not-a-named-contact"], id="not-a-named-contact"),
        pytest.param(True, MAINTAINED, LATEST, date(2028, 2, 1), ["maintenance-not-current"], id="lapsed"),
        pytest.param(
            False,
            [],
            OLD,
            date(2027, 6, 1),
            ["not-a-named-contact", "maintenance-not-current", "release-out-of-support"],
            id="every-reason-at-once",
        ),
    ],
)
def test_support_eligibility(
    named: bool, terms: list[rules.Term], release: support.Release, today: date, codes: list[str]
) -> None:
    now = datetime(today.year, today.month, today.day, 12, tzinfo=UTC)
    reasons = support.eligibility(named_contact=named, terms=terms, release=release, releases=RELEASES, now=now,
                                  today=today)  # fmt: skip
    assert [r.code for r in reasons] == codes
    assert all(r.detail for r in reasons)


@pytest.mark.parametrize(
    ("now", "until", "left"),
    [
        (datetime(2027, 3, 10, tzinfo=UTC), datetime(2027, 12, 31, tzinfo=UTC), (9, 10)),
        (datetime(2027, 1, 31, tzinfo=UTC), datetime(2028, 1, 31, tzinfo=UTC), (12, 12)),
        (datetime(2027, 1, 31, 0, 0, 1, tzinfo=UTC), datetime(2028, 1, 31, tzinfo=UTC), (11, 12)),
        (datetime(2027, 12, 30, tzinfo=UTC), datetime(2027, 12, 31, tzinfo=UTC), (0, 1)),
        (datetime(2028, 1, 31, tzinfo=UTC), datetime(2028, 1, 31, tzinfo=UTC), (0, 0)),
    ],
)
def test_months_left_whole_and_started(now: datetime, until: datetime, left: tuple[int, int]) -> None:
    from server.domain.calendar import months_left

    assert months_left(now, until) == left
