"""What each price means (one definition, used by every charge), and which price is in force on a day.

- The **licence price** (`price_cents`): paid once, when a perpetual licence is issued; its first
  maintenance year is included (000, 003).
- The **yearly fee** (`renewal_price_cents`, or `price_cents` when unset): a year of maintenance for a
  perpetual licence, or a year of use (with its maintenance) for a subscription. A term of n months
  costs yearly fee x n / 12, from the first term on (a subscription's first term included).
- Either is per **licence package** (002: "je Lizenzpaket", the same for multi-seat packages) or per
  **seat**, as the plan says (`price_per`).
- Prices have effective dates: a charge uses the price list in force on its day (a renewal on the day
  it is bought or, renewed automatically, on the day its term starts); a reinstatement the current one
  (001: "de actuele kostprijs").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

PER_PACKAGE = "package"
PER_SEAT = "seat"
PRICE_BASES = (PER_PACKAGE, PER_SEAT)


@dataclass(frozen=True, slots=True)
class PriceList:
    effective_from: date | None  # None: the plan's own prices, in force from its creation
    price_cents: int
    renewal_price_cents: int | None
    host_change_price_cents: int | None
    dongle_replacement_price_cents: int | None

    @property
    def yearly_fee_cents(self) -> int:
        return self.renewal_price_cents if self.renewal_price_cents is not None else self.price_cents


def in_force(lists: Sequence[PriceList], day: date) -> PriceList:
    """The latest price list that took effect on or before `day`; the plan's own when none did."""
    base = next(p for p in lists if p.effective_from is None)
    dated = [p for p in lists if p.effective_from is not None and p.effective_from <= day]
    return max(dated, key=lambda p: p.effective_from or date.min, default=base)


def _units(per: str, seats: int) -> int:
    return seats if per == PER_SEAT else 1


def licence_charge(prices: PriceList, *, kind: str, term_months: int, per: str, seats: int) -> int:
    """What issuing a licence costs: a perpetual licence's price (its first year included), or a
    subscription's first term at the yearly fee pro rata."""
    if kind == "perpetual":
        return prices.price_cents * _units(per, seats)
    return term_fee(prices, term_months, per=per, seats=seats)


def term_fee(prices: PriceList, months: int, *, per: str, seats: int) -> int:
    """A term of `months` at the yearly fee, pro rata per month, rounded down to the cent."""
    return prices.yearly_fee_cents * months * _units(per, seats) // 12


def back_fee_base(prices: PriceList, *, per: str, seats: int) -> int:
    """The price a reinstatement's back-fee is counted from (001: 1/60 of the current licence price)."""
    return prices.price_cents * _units(per, seats)


@dataclass(frozen=True, slots=True)
class Holding:
    """What a licence holds for pricing: its price list, its basis (package or seat) and seats."""

    prices: PriceList
    per: str
    seats: int

    @property
    def licence_cents(self) -> int:
        return self.prices.price_cents * _units(self.per, self.seats)

    @property
    def yearly_cents(self) -> int:
        return self.prices.yearly_fee_cents * _units(self.per, self.seats)


@dataclass(frozen=True, slots=True)
class ChangeCharge:
    licence_cents: int  # a perpetual licence's price for what it gains (never refunded)
    term_cents: int  # the yearly fee's difference over the rest of the paid maintenance (negative: a credit)
    months: int  # the months `term_cents` is counted over

    @property
    def total_cents(self) -> int:
        return self.licence_cents + self.term_cents


def change_charge(before: Holding, after: Holding, *, kind: str, months_left: tuple[int, int]) -> ChangeCharge:
    """What changing a licence's seats or plan costs today, from one definition:

    - a perpetual licence pays the difference of the licence price when it grows (more seats on a per-seat
      plan, or a dearer plan); a perpetual licence bought is not refunded when it shrinks;
    - the yearly fee's difference, pro rata per month over the rest of the paid maintenance (or subscription):
      every started month when it grows, a credit of the whole months when it shrinks (`months_left` is
      (whole, started), from calendar.months_left), so adding and removing again never earns money.
    """
    licence = max(after.licence_cents - before.licence_cents, 0) if kind == "perpetual" else 0
    difference = after.yearly_cents - before.yearly_cents
    whole, started = months_left
    months = started if difference > 0 else whole
    # Rounded toward zero on both sides: a charge down to the cent, a credit never more than earned.
    term = difference * months // 12 if difference >= 0 else -((-difference) * months // 12)
    return ChangeCharge(licence, term, months if difference else 0)
