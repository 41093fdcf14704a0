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


SEAT = prices.PriceList(None, 10_000, 2_400, None, None)
PACKAGE = prices.PriceList(None, 90_000, 18_000, None, None)


def _held(price_list: prices.PriceList, per: str, seats: int) -> prices.Holding:
    return prices.Holding(price_list, per, seats)


@pytest.mark.parametrize(
    ("before", "after", "kind", "left", "expected"),
    [
        # Two seats more on a per-seat plan: their licence price and every started month of their yearly fee.
        pytest.param(_held(SEAT, "seat", 2), _held(SEAT, "seat", 4), "perpetual", (9, 10), (20_000, 4_000, 10),
                     id="perpetual-grows-pays-licence-and-started-months"),
        # One seat fewer: no licence price back, the whole months of its yearly fee credited.
        pytest.param(_held(SEAT, "seat", 4), _held(SEAT, "seat", 3), "perpetual", (9, 10), (0, -1_800, 9),
                     id="perpetual-shrinks-credits-whole-months"),
        # Per package (002): seats cost nothing either way.
        pytest.param(_held(PACKAGE, "package", 2), _held(PACKAGE, "package", 5), "perpetual", (9, 10), (0, 0, 0),
                     id="per-package-seats-are-free"),
        # A subscription has no licence price: only the fee's difference.
        pytest.param(_held(SEAT, "seat", 1), _held(SEAT, "seat", 2), "subscription", (0, 1), (0, 200, 1),
                     id="subscription-last-started-month"),
        pytest.param(_held(SEAT, "seat", 3), _held(PACKAGE, "package", 3), "perpetual", (12, 12), (60_000, 10_800, 12),
                     id="plan-move-to-dearer"),
        pytest.param(_held(PACKAGE, "package", 3), _held(SEAT, "seat", 3), "perpetual", (5, 6), (0, -4_500, 5),
                     id="plan-move-to-cheaper-no-licence-refund"),
        pytest.param(_held(SEAT, "seat", 2), _held(SEAT, "seat", 4), "perpetual", (0, 0), (20_000, 0, 0),
                     id="lapsed-maintenance-only-the-licence-price"),
    ],
)
def test_what_a_change_after_sale_costs(
    before: prices.Holding, after: prices.Holding, kind: str, left: tuple[int, int], expected: tuple[int, int, int]
) -> None:
    charge = prices.change_charge(before, after, kind=kind, months_left=left)
    assert (charge.licence_cents, charge.term_cents, charge.months) == expected
    assert charge.total_cents == expected[0] + expected[1]


def test_adding_and_removing_a_seat_again_never_earns_money() -> None:
    for left in ((0, 1), (5, 6), (11, 12), (12, 12)):
        up = prices.change_charge(_held(SEAT, "seat", 1), _held(SEAT, "seat", 2), kind="subscription", months_left=left)
        down = prices.change_charge(_held(SEAT, "seat", 2), _held(SEAT, "seat", 1), kind="subscription",
                                    months_left=left)  # fmt: skip
        assert up.total_cents + down.total_cents >= 0, left
