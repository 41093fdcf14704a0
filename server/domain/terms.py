"""Maintenance terms, renewal, cancellation, lapse, reinstatement and entitlement (rules 1-3, 7, 9).

Pure: data and `now` in, decisions out. Terms are half-open intervals [start, end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from server.domain.calendar import add_months, whole_months_between
from server.domain.errors import CancellationNotPossible, MaintenanceLapsed, ValidationFailed

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


@dataclass(frozen=True, slots=True)
class Cancellation:
    """What a cancellation asked at `requested` does: the last term that runs, and whether one more is created."""

    requested: datetime
    effective: datetime  # maintenance (or the subscription) ends here
    in_time: bool  # False: too late for the coming renewal, so one more term runs


def current_term(terms: Sequence[Term], now: datetime) -> Term | None:
    return next((t for t in terms if t.covers(now)), None)


def latest_term(terms: Sequence[Term]) -> Term | None:
    return max(terms, key=lambda t: t.end, default=None)


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


def cancel(terms: Sequence[Term], policy: RenewalPolicy, requested: datetime) -> Cancellation:
    """Rule 1: cancelled at least the notice period before the next term starts, maintenance ends with the
    current term; later, the next term still runs and maintenance ends at its end (003, 004)."""
    latest = latest_term(terms)
    if latest is None or latest.end <= requested:
        raise CancellationNotPossible("there is no running term to cancel: maintenance has already lapsed")
    if not latest.auto_renew or latest.cancelled_at is not None:
        raise CancellationNotPossible(
            f"renewal is already cancelled: maintenance ends on {latest.end.date().isoformat()}",
            effective=latest.end.isoformat(),
        )
    deadline = add_months(latest.end, -notice_months(policy))
    if requested <= deadline:
        return Cancellation(requested, latest.end, in_time=True)
    following = add_months(latest.end, next_term_months(policy, latest))
    return Cancellation(requested, following, in_time=False)


@dataclass(frozen=True, slots=True)
class DueTerm:
    start: datetime
    end: datetime
    auto_renew: bool  # False when a late cancellation lets just this one more term run


def due_renewals(terms: Sequence[Term], policy: RenewalPolicy, now: datetime) -> list[DueTerm]:
    """Rule 1: every renewal that should exist by `now`, in order (a server that was down catches up).

    The latest term renews at its end if auto-renew is on. A cancellation that came too late
    (recorded on the term with auto-renew still on) lets exactly one more term run, without auto-renew.
    """
    latest = latest_term(terms)
    due: list[DueTerm] = []
    if latest is None:
        return due
    end, auto, cancelled, previous = latest.end, latest.auto_renew, latest.cancelled_at, latest
    while auto and end <= now:
        months = next_term_months(policy, previous)
        term = DueTerm(end, add_months(end, months), auto_renew=cancelled is None)
        due.append(term)
        previous = Term(term.start, term.end, "renewal", term.auto_renew)
        end, auto, cancelled = term.end, term.auto_renew, None
    return due


def lapsed_months(terms: Sequence[Term], now: datetime) -> int:
    latest = latest_term(terms)
    if latest is None or latest.end > now:
        return 0
    return whole_months_between(latest.end, now)


def reinstatement_fee(rule: str, licence_price_cents: int, months_lapsed: int) -> int:
    """Rule 7: default (001) the current licence price / 60 per whole month without maintenance."""
    if months_lapsed < 0 or licence_price_cents < 0:
        raise ValidationFailed("months and prices cannot be negative")
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
