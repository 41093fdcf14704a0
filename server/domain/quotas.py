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
    """The maintenance term a move is counted in; without a current term, the time since the last one ended."""

    start: datetime | None
    resets_at: datetime | None  # None: the count resets only when maintenance is renewed or reinstated


def quota_window(term: Term | None, last_end: datetime | None) -> QuotaWindow:
    if term is not None:
        return QuotaWindow(term.start, term.end)
    return QuotaWindow(last_end, None)


def deactivations_left(limit: int | None, used: int) -> int | None:
    """Rule 4: unlimited (None) unless the plan sets a quota per term (000)."""
    return None if limit is None else max(limit - used, 0)


def check_deactivation(limit: int | None, used: int, window: QuotaWindow) -> None:
    if limit is not None and used >= limit:
        when = window.resets_at.date().isoformat() if window.resets_at else "the next maintenance term"
        raise QuotaExhausted(
            f"all {limit} deactivations of this maintenance term are used; the quota resets on {when}",
            limit=limit,
            resets_at=window.resets_at.isoformat() if window.resets_at else None,
        )


@dataclass(frozen=True, slots=True)
class Charge:
    kind: str  # FREE or CHARGED
    amount_cents: int


def free_host_changes_left(term: Term | None, approved_in_term: int, free_per_term: int) -> int:
    if term is None:  # no maintenance, no free change (seed 000)
        return 0
    return max(free_per_term - approved_in_term, 0)


def host_change_charge(
    term: Term | None, approved_in_term: int, free_per_term: int, price_cents: int | None, window: QuotaWindow
) -> Charge:
    """Rule 5: the first approved change in a maintenance term is free; later ones are charged at the
    plan's price, or refused when the plan offers none."""
    if free_host_changes_left(term, approved_in_term, free_per_term) > 0:
        return Charge(FREE, 0)
    if price_cents is None:
        when = window.resets_at.date().isoformat() if window.resets_at else "the next maintenance term"
        raise QuotaExhausted(
            f"no free host-ID change is left in this term and the plan sells no extra ones; it resets on {when}",
            resets_at=window.resets_at.isoformat() if window.resets_at else None,
        )
    return Charge(CHARGED, price_cents)


def dongle_replacement_charge(term: Term | None, price_cents: int) -> Charge:
    """Rule 6: free while maintenance is active, charged otherwise (003)."""
    return Charge(FREE, 0) if term is not None else Charge(CHARGED, price_cents)
