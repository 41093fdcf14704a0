"""One definition of each price (server.domain.prices), table by table."""

from __future__ import annotations

from datetime import date

import pytest

from server.domain import prices

BASE = prices.PriceList(None, 120_000, 24_000, 25_000, None)
RAISED = prices.PriceList(date(2028, 1, 1), 150_000, 30_000, 25_000, None)
LATER = prices.PriceList(date(2029, 1, 1), 150_000, None, None, None)
LISTS = [BASE, RAISED, LATER]


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        pytest.param(date(2027, 12, 31), BASE, id="before-any-change-the-plans-own"),
        pytest.param(date(2028, 1, 1), RAISED, id="on-its-first-day"),
        pytest.param(date(2028, 12, 31), RAISED, id="until-the-next"),
        pytest.param(date(2030, 6, 1), LATER, id="the-latest"),
    ],
)
def test_the_price_in_force(day: date, expected: prices.PriceList) -> None:
    assert prices.in_force(LISTS, day) is expected


@pytest.mark.parametrize(
    ("kind", "months", "per", "seats", "charge"),
    [
        pytest.param("perpetual", 12, prices.PER_PACKAGE, 5, 120_000, id="perpetual-flat-per-package-002"),
        pytest.param("perpetual", 12, prices.PER_SEAT, 5, 600_000, id="perpetual-per-seat"),
        pytest.param("subscription", 12, prices.PER_PACKAGE, 5, 24_000, id="subscription-a-year"),
        pytest.param("subscription", 3, prices.PER_PACKAGE, 1, 6_000, id="subscription-3-months-pro-rata"),
        pytest.param("subscription", 1, prices.PER_SEAT, 3, 6_000, id="subscription-a-month-per-seat"),
    ],
)
def test_issuing_a_licence(kind: str, months: int, per: str, seats: int, charge: int) -> None:
    assert prices.licence_charge(BASE, kind=kind, term_months=months, per=per, seats=seats) == charge


@pytest.mark.parametrize(
    ("listed", "months", "fee"),
    [
        pytest.param(BASE, 12, 24_000, id="a-year-at-the-yearly-fee"),
        pytest.param(BASE, 36, 72_000, id="a-3-year-extension"),
        pytest.param(BASE, 1, 2_000, id="a-month"),
        pytest.param(prices.PriceList(None, 1_000, None, None, None), 1, 83, id="no-renewal-price-the-price-rounded"),
        pytest.param(LATER, 12, 150_000, id="renewal-price-unset-uses-price"),
    ],
)
def test_term_fees_are_pro_rata_from_the_first_term_on(listed: prices.PriceList, months: int, fee: int) -> None:
    assert prices.term_fee(listed, months, per=prices.PER_PACKAGE, seats=4) == fee


def test_the_back_fee_counts_from_the_current_licence_price() -> None:
    assert prices.back_fee_base(RAISED, per=prices.PER_PACKAGE, seats=3) == 150_000
    assert prices.back_fee_base(RAISED, per=prices.PER_SEAT, seats=3) == 450_000
