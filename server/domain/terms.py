"""Maintenance terms, renewal, cancellation, lapse, reinstatement and entitlement (rules 1-3, 7, 9).

Pure: data and `now` in, decisions out. Terms are half-open intervals [start, end).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from server.domain.calendar import (
    UTC_CALENDAR,
    BusinessCalendar,
    add_months_to_date,
    anchored,
    month_index,
    whole_months_between,
)
from server.domain.errors import CancellationNotPossible, MaintenanceLapsed, PlanInconsistent, ValidationFailed

YEARLY = "yearly"
MONTHLY_AFTER_FIRST_YEAR = "monthly-after-first-year"  # seed 004: minimum one year, then monthly
RENEWAL_RULES = (YEARLY, MONTHLY_AFTER_FIRST_YEAR)

BACK_FEES = "back-fees"  # seed 001: licence price / 60 x whole months without maintenance
FULL_PRICE = "full-price"
NO_FEE = "free"
REINSTATEMENT_RULES = (BACK_FEES, FULL_PRICE, NO_FEE)


@dataclass(frozen=True, slots=True)
class Term:
    start: datetime
    end: datetime
    origin: str
    auto_renew: bool = True
    cancelled_at: datetime | None = None
    received_on: date | None = None  # the business day the cancellation counts from

    def covers(self, now: datetime) -> bool:
        return self.start <= now < self.end

    @property
    def months(self) -> int:
        return whole_months_between(self.start, self.end)


@dataclass(frozen=True, slots=True)
class RenewalPolicy:
    rule: str = YEARLY
    term_months: int = 12
    notice_months: int = 3
    processing_days: int = 0  # working days the vendor takes to process a cancellation (004: two)


@dataclass(frozen=True, slots=True)
class Cancellation:
    """What a cancellation asked at `requested` does: the last term that runs, and whether one more is created."""

    requested: datetime  # when it was recorded
    effective: datetime  # maintenance (or the subscription) ends here
    in_time: bool  # False: too late for the coming renewal, so one more term runs
    received_on: date  # the business day it counts from (the day a letter arrived, or today)
    deadline: date  # the last business day on which it may be processed and still be in time
    processed_on: date  # received_on plus the plan's processing working days


def current_term(terms: Sequence[Term], now: datetime) -> Term | None:
    return next((t for t in terms if t.covers(now)), None)


def latest_term(terms: Sequence[Term]) -> Term | None:
    return max(terms, key=lambda t: t.end, default=None)


def contract_start(terms: Sequence[Term], term: Term | None = None) -> datetime | None:
    """The anchor of the contract `term` (default: the latest) belongs to: the start of the run of terms that
    follow one another without a gap. A reinstatement after a lapse starts a new contract (and a new anchor).

    Derived, not stored, so installations whose terms drifted keep every term already billed and renew
    from the contract's start day from now on."""
    target = term if term is not None else latest_term(terms)
    if target is None:
        return None
    by_end = {t.end: t for t in terms}  # terms never overlap: one term ends where the next starts
    while (previous := by_end.get(target.start)) is not None and previous is not target:
        target = previous
    return target.start


def term_end(anchor: datetime, start: datetime, months: int, zone: tzinfo = UTC) -> datetime:
    """The end of a term of `months` starting at `start`, on the contract's month boundaries (rule 9): the n-th
    boundary is the anchor's day n months later, clamped to the month's last day. A start that drifted under
    the old arithmetic (28 April for 31 January) still ends on a boundary (31 May)."""
    index = month_index(anchor, start, zone) + months
    end = anchored(anchor, index, zone)
    while end <= start:
        index += 1
        end = anchored(anchor, index, zone)
    return end


def maintenance_until(terms: Sequence[Term]) -> datetime | None:
    """Rule 2: the end of the latest term bounds which releases are entitled."""
    latest = latest_term(terms)
    return latest.end if latest else None


def is_lapsed(terms: Sequence[Term], now: datetime) -> bool:
    """No term covers `now` and none starts later: maintenance has lapsed."""
    latest = latest_term(terms)
    return latest is None or latest.end <= now


def entitled(released_on: date, maint_until: datetime | None) -> bool:
    """Rule 2: a release is entitled when it is dated on or before the end of the latest term."""
    return maint_until is not None and released_on <= maint_until.date()


def next_term_months(policy: RenewalPolicy, previous: Term) -> int:
    if policy.rule == MONTHLY_AFTER_FIRST_YEAR:
        return 1
    return policy.term_months


def notice_months(policy: RenewalPolicy) -> int:
    # Seed 004: after the first year the contract runs monthly with one calendar month's notice.
    return 1 if policy.rule == MONTHLY_AFTER_FIRST_YEAR else policy.notice_months


def notice_deadline(renews_at: datetime, policy: RenewalPolicy, calendar: BusinessCalendar = UTC_CALENDAR) -> date:
    """The last calendar day, in the business time zone, on which a cancellation still stops the renewal at
    `renews_at`: the notice period before the day the new term starts (003: "ten laatste drie maanden voor
    de start van de nieuwe assistentieperiode"). The whole day counts, whatever the hour."""
    return add_months_to_date(calendar.day_of(renews_at), -notice_months(policy))


def cancel(
    terms: Sequence[Term],
    policy: RenewalPolicy,
    now: datetime,
    *,
    received_on: date | None = None,
    calendar: BusinessCalendar = UTC_CALENDAR,
) -> Cancellation:
    """Rule 1: processed at the latest on the notice deadline day, maintenance ends with the current term;
    later, the next term still runs and maintenance ends at its end (003, 004).

    A cancellation counts from the day it was received (`received_on`, a letter or an e-mail recorded by
    support; default: today in the business time zone), plus the plan's processing working days (004)."""
    latest = latest_term(terms)
    if latest is None or latest.end <= now:
        raise CancellationNotPossible("there is no running term to cancel: maintenance has already lapsed")
    if not latest.auto_renew or latest.cancelled_at is not None:
        raise CancellationNotPossible(
            f"renewal is already cancelled: maintenance ends on {latest.end.date().isoformat()}",
            effective=latest.end.isoformat(),
        )
    today = calendar.day_of(now)
    received = today if received_on is None else received_on
    if received > today:
        raise ValidationFailed(f"received_on {received.isoformat()} is in the future (today is {today.isoformat()})")
    running = current_term(terms, now) or latest
    if received < calendar.day_of(running.start):
        raise ValidationFailed(
            f"received_on {received.isoformat()} is before the running term began "
            f"({calendar.day_of(running.start).isoformat()}): correct the renewal made since by hand"
        )
    deadline = notice_deadline(latest.end, policy, calendar)
    processed = calendar.working_days_after(received, policy.processing_days)
    if processed <= deadline:
        return Cancellation(now, latest.end, True, received, deadline, processed)
    # Too late for the coming renewal: terms run on until the first one whose notice it still meets (with
    # monthly terms and processing days, a cancellation late in the month may let two more run, 004).
    anchor = contract_start(terms) or latest.start
    end, previous = latest.end, latest
    while True:
        following = term_end(anchor, end, next_term_months(policy, previous), calendar.zone)
        previous = Term(end, following, "renewal")
        end = following
        if processed <= notice_deadline(end, policy, calendar):
            return Cancellation(now, end, False, received, deadline, processed)


@dataclass(frozen=True, slots=True)
class DueTerm:
    start: datetime
    end: datetime
    auto_renew: bool  # False on the last term a late cancellation lets run
    cancelled_at: datetime | None = None  # a late cancellation, carried until the term it ends
    received_on: date | None = None


def due_renewals(
    terms: Sequence[Term], policy: RenewalPolicy, now: datetime, calendar: BusinessCalendar = UTC_CALENDAR
) -> list[DueTerm]:
    """Rule 1: every renewal that should exist by `now`, in order (a server that was down catches up).

    The latest term renews at its end if auto-renew is on. A cancellation that came too late (recorded on
    the term with auto-renew still on) lets terms run until the first whose notice deadline it met; the
    last of them has auto-renew off. Each new term ends on the contract's month boundary (rule 9).
    """
    latest = latest_term(terms)
    due: list[DueTerm] = []
    if latest is None:
        return due
    anchor = contract_start(terms) or latest.start
    end, auto, previous = latest.end, latest.auto_renew, latest
    cancelled, received = latest.cancelled_at, latest.received_on
    if cancelled is not None and received is None:
        received = calendar.day_of(cancelled)  # recorded before received_on existed
    processed = calendar.working_days_after(received, policy.processing_days) if received else None
    while auto and end <= now:
        if processed is not None and processed <= notice_deadline(end, policy, calendar):
            break  # the cancellation met this renewal's notice: nothing more runs
        months = next_term_months(policy, previous)
        new_end = term_end(anchor, end, months, calendar.zone)
        last = processed is not None and processed <= notice_deadline(new_end, policy, calendar)
        term = DueTerm(end, new_end, auto_renew=not last, cancelled_at=cancelled, received_on=received)
        due.append(term)
        previous = Term(term.start, term.end, "renewal", term.auto_renew)
        end, auto = term.end, term.auto_renew
    return due


def maintenance_year(terms: Sequence[Term], now: datetime, zone: tzinfo = UTC) -> Term | None:
    """Rules 4 and 5: the maintenance year `now` falls in, twelve months counted from the contract's start day
    whatever the length of the terms sold (a 3-year extension has three, a monthly plan one per twelve
    months); None without maintenance now. Returned as a span with the covering term's origin and flags."""
    current = current_term(terms, now)
    if current is None:
        return None
    anchor = contract_start(terms, current) or current.start
    year = whole_months_between(anchor, now, zone) // 12
    start, end = anchored(anchor, 12 * year, zone), anchored(anchor, 12 * (year + 1), zone)
    return Term(start, end, current.origin, current.auto_renew, current.cancelled_at)


def runs_through(terms: Sequence[Term], moment: datetime) -> bool:
    """Maintenance is paid up to `moment`, or renews by itself until then."""
    latest = latest_term(terms)
    if latest is None:
        return False
    return latest.end >= moment or (latest.auto_renew and latest.cancelled_at is None)


def lapsed_months(terms: Sequence[Term], now: datetime, zone: tzinfo = UTC) -> int:
    latest = latest_term(terms)
    if latest is None or latest.end > now:
        return 0
    return whole_months_between(latest.end, now, zone)


def default_reinstatement_rule(kind: str) -> str:
    """001's back-fee brings a perpetual licence's maintenance back up to date; a lapsed subscription was not
    used while it lapsed and simply starts again with its new term's fee (000). A plan may choose otherwise."""
    return NO_FEE if kind == "subscription" else BACK_FEES


def reinstatement_fee(rule: str, licence_price_cents: int, months_lapsed: int, cap_months: int | None = None) -> int:
    """Rule 7: default (001) the current licence price / 60 per whole month without maintenance; a plan may
    cap the months charged (`back_fee_cap_months`; 001 sets none)."""
    if months_lapsed < 0 or licence_price_cents < 0:
        raise ValidationFailed("months and prices cannot be negative")
    if cap_months is not None:
        months_lapsed = min(months_lapsed, cap_months)
    if rule == BACK_FEES:
        return licence_price_cents * months_lapsed // 60
    if rule == FULL_PRICE:
        return licence_price_cents if months_lapsed else 0
    if rule == NO_FEE:
        return 0
    raise ValidationFailed(f"unknown reinstatement rule {rule!r}")


def extension_start(terms: Sequence[Term], now: datetime) -> datetime:
    """A renewal bought ahead starts where the latest term ends; a lapsed licence must be reinstated."""
    latest = latest_term(terms)
    if latest is None or latest.end <= now:
        raise MaintenanceLapsed("maintenance has lapsed: reinstate it instead of renewing")
    return latest.end


# -- plans that make sense -----------------------------------------------------------

PRICES = ("price_cents", "renewal_price_cents", "host_change_price_cents", "dongle_replacement_price_cents")
MAX_PROCESSING_DAYS = 30


def shortest_term_days(months: int) -> int:
    """The fewest days a term of `months` calendar months can have (February, and no leap day)."""
    return 365 * (months // 12) + 28 * (months % 12)


def check_plan(values: Mapping[str, Any]) -> None:
    """Refuses a plan whose settings contradict each other, naming the setting to change (`setting`).

    The notice period may equal the term (004: monthly terms, one calendar month's notice) but not exceed it;
    no price is negative; grace days are shorter than the shortest term, or a subscription would run for
    free through the next one."""
    for name in PRICES:
        value = values.get(name)
        if value is not None and value < 0:
            raise PlanInconsistent(f"{name} = {value}: a price cannot be negative", setting=name)
    rule = values.get("renewal_rule", YEARLY)
    term_months = int(values.get("term_months", 12))
    notice = int(values.get("notice_months", 3))
    if notice < 0:
        raise PlanInconsistent(f"notice_months = {notice}: cannot be negative", setting="notice_months")
    if rule == YEARLY and notice > term_months:
        raise PlanInconsistent(
            f"notice_months = {notice} is longer than the term (term_months = {term_months}): a cancellation "
            "could never be in time; the notice may at most equal the term",
            setting="notice_months",
        )
    # After a first term the monthly rule renews month by month: the shortest term is one month.
    shortest = shortest_term_days(1 if rule == MONTHLY_AFTER_FIRST_YEAR else term_months)
    grace = int(values.get("grace_days", 0))
    if grace > shortest:
        raise PlanInconsistent(
            f"grace_days = {grace} is longer than the shortest term ({shortest} days)", setting="grace_days"
        )
    cap = values.get("back_fee_cap_months")
    if cap is not None and cap < 0:
        raise PlanInconsistent(f"back_fee_cap_months = {cap}: cannot be negative", setting="back_fee_cap_months")
    if values.get("maintenance_mandatory") and values.get("kind", "perpetual") != "perpetual":
        raise PlanInconsistent(
            "maintenance_mandatory is for perpetual plans: a subscription's maintenance is its right of use",
            setting="maintenance_mandatory",
        )
    processing = int(values.get("processing_days", 0))
    if not 0 <= processing <= MAX_PROCESSING_DAYS:
        raise PlanInconsistent(
            f"processing_days = {processing}: expected 0..{MAX_PROCESSING_DAYS} working days",
            setting="processing_days",
        )
