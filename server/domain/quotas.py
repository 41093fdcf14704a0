"""Seat moves and what they cost: deactivation quotas, host-ID changes, dongle replacements (rules 4-6)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.domain.errors import QuotaExhausted
from server.domain.terms import Term

FREE = "free"
CHARGED = "charged"


@dataclass(frozen=True, slots=True)
class QuotaWindow:
    """The maintenance year a move is counted in (twelve months from the contract's start day, whatever the
    length of the terms sold); without maintenance now, the time since the last term ended."""

    start: datetime | None
    resets_at: datetime | None  # None: the count resets only when maintenance is renewed or reinstated


def quota_window(year: Term | None, last_end: datetime | None, *, continues: bool = True) -> QuotaWindow:
    """`year` from terms.maintenance_year; `continues`: maintenance still runs when the year ends (paid up or
    renewing by itself), so a new quota really comes then."""
    if year is not None:
        return QuotaWindow(year.start, year.end if continues else None)
    return QuotaWindow(last_end, None)


def deactivations_left(limit: int | None, used: int) -> int | None:
    """Rule 4: unlimited (None) unless the plan sets a quota per maintenance year (000)."""
    return None if limit is None else max(limit - used, 0)


def check_deactivation(limit: int | None, used: int, window: QuotaWindow) -> None:
    if limit is not None and used >= limit:
        when = window.resets_at.date().isoformat() if window.resets_at else "the next maintenance term"
        raise QuotaExhausted(
            f"all {limit} deactivations of this maintenance year are used; the quota resets on {when}",
            limit=limit,
            resets_at=window.resets_at.isoformat() if window.resets_at else None,
        )


@dataclass(frozen=True, slots=True)
class Charge:
    kind: str  # FREE or CHARGED
    amount_cents: int


def free_host_changes_left(year: Term | None, approved_in_year: int, free_per_year: int) -> int:
    if year is None:  # no maintenance, no free change (seed 000)
        return 0
    return max(free_per_year - approved_in_year, 0)


def host_change_charge(
    year: Term | None, approved_in_year: int, free_per_year: int, price_cents: int | None, window: QuotaWindow
) -> Charge:
    """Rule 5: the first approved change in a maintenance year is free (000: "éénmaal kosteloos" within the
    maintenance period, a year); later ones are charged at the plan's price, or refused when it sells none."""
    if free_host_changes_left(year, approved_in_year, free_per_year) > 0:
        return Charge(FREE, 0)
    if price_cents is None:
        when = window.resets_at.date().isoformat() if window.resets_at else "the next maintenance term"
        raise QuotaExhausted(
            f"no free host-ID change is left in this maintenance year and the plan sells no extra ones; "
            f"it resets on {when}",
            resets_at=window.resets_at.isoformat() if window.resets_at else None,
        )
    return Charge(CHARGED, price_cents)


def dongle_replacement_charge(term: Term | None, price_cents: int) -> Charge:
    """Rule 6: free while maintenance is active, charged otherwise (003)."""
    return Charge(FREE, 0) if term is not None else Charge(CHARGED, price_cents)
