"""A plan's price lists in the database: its own prices (in force from its creation) and the later ones
with effective dates (plan_prices). The meaning of each price is in server.domain.prices."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Connection, select

from server.db.models import PlanPrice
from server.domain import prices as rules


def price_lists(conn: Connection, plan: Any) -> list[rules.PriceList]:
    rows = conn.execute(
        select(PlanPrice.__table__).where(PlanPrice.plan_id == plan.id).order_by(PlanPrice.effective_from)
    )
    return [_price_list(None, plan), *(_price_list(r.effective_from, r) for r in rows)]


def _price_list(effective_from: date | None, row: Any) -> rules.PriceList:
    return rules.PriceList(
        effective_from,
        row.price_cents,
        row.renewal_price_cents,
        row.host_change_price_cents,
        row.dongle_replacement_price_cents,
    )


def in_force(conn: Connection, plan: Any, day: date) -> rules.PriceList:
    return rules.in_force(price_lists(conn, plan), day)
