"""Migration 0005 on an installation with history, on SQLite and PostgreSQL: terms already billed (which
drifted under the old arithmetic) stay as they are, the next renewal returns to the contract's start day,
a cancellation recorded before counts from the day it was recorded, and subscription plans on the old
default back-fee rule restart for free."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from typing import Any

from alembic import command
from sqlalchemy import Boolean, Connection, String, Uuid, column, delete, insert, select, table, update

from server.db.database import open_database
from server.db.ids import new_id
from server.db.migrate import alembic_config, current_revision, upgrade
from server.db.models import MaintenanceTerm, Plan, UTCDateTime
from server.services import licensing, terms
from server.services.access import OPERATOR


def at(y: int, m: int, d: int, hh: int = 9) -> datetime:
    return datetime(y, m, d, hh, tzinfo=UTC)


def run(url: str, fn: Any, *args: Any) -> Any:
    async def go() -> Any:
        db = open_database(url, pool_size=1)
        try:
            return await db.run(fn, *args)
        finally:
            await db.close()

    return asyncio.run(go())


# The terms table as 0004 left it (no received-on column).
TERMS_0004 = table(
    "maintenance_terms", column("id", Uuid()), column("licence_id", Uuid()), column("starts_at", UTCDateTime()),
    column("ends_at", UTCDateTime()), column("origin", String()), column("auto_renew", Boolean()),
    column("cancelled_at", UTCDateTime()),
)  # fmt: skip
DRIFTED = [(at(2027, 1, 31), at(2027, 2, 28)), (at(2027, 2, 28), at(2027, 3, 28)), (at(2027, 3, 28), at(2027, 4, 28))]


def _seed(conn: Connection) -> str:
    t0 = DRIFTED[0][0]
    licensing.add_product(conn, "cad", "CAD", t0)
    licensing.add_plan(conn, "sub", {"kind": "subscription", "model": "activation", "term_months": 1,
                                     "notice_months": 1, "renewal_price_cents": 1_200}, t0)  # fmt: skip
    licensing.add_plan(conn, "perp", {"kind": "perpetual", "model": "activation"}, t0)
    licensing.add_customer(conn, "Acme", None, t0)
    return licensing.issue_licence(conn, OPERATOR, "Acme", "cad", "sub", 1, t0).id


def _rewrite_history_as_0004_left_it(conn: Connection, licence_id: str) -> None:
    lid = uuid.UUID(licence_id)
    conn.execute(update(Plan.__table__).values(reinstatement_rule="back-fees"))
    conn.execute(delete(TERMS_0004).where(TERMS_0004.c.licence_id == lid))
    for i, (start, end) in enumerate(DRIFTED):
        cancelled = at(2027, 4, 10, 23) if i == len(DRIFTED) - 1 else None  # late for 28 April
        conn.execute(insert(TERMS_0004).values(
            id=new_id(), licence_id=lid, starts_at=start, ends_at=end, origin="subscription", auto_renew=True,
            cancelled_at=cancelled,
        ))  # fmt: skip


def _state(conn: Connection, licence_id: str) -> dict[str, Any]:
    rules = {name: rule for name, rule in conn.execute(select(Plan.name, Plan.reinstatement_rule))}
    rows = conn.execute(
        select(MaintenanceTerm.starts_at, MaintenanceTerm.ends_at, MaintenanceTerm.auto_renew,
               MaintenanceTerm.cancellation_received_on)
        .where(MaintenanceTerm.licence_id == uuid.UUID(licence_id))
        .order_by(MaintenanceTerm.starts_at)
    ).all()  # fmt: skip
    return {"rules": rules, "terms": [tuple(r) for r in rows]}


def test_0005_keeps_billed_terms_and_renews_on_the_start_day(database_url: str) -> None:
    upgrade(database_url)
    licence_id = run(database_url, _seed)
    command.downgrade(alembic_config(database_url), "0004")
    assert current_revision(database_url) == "0004"
    run(database_url, _rewrite_history_as_0004_left_it, licence_id)
    upgrade(database_url)

    state = run(database_url, _state, licence_id)
    assert state["rules"] == {"sub": "free", "perp": "back-fees"}
    assert [(s, e) for s, e, _, _ in state["terms"]] == DRIFTED  # nothing already billed changed
    assert state["terms"][-1][3] == date(2027, 4, 10)  # counts from the day it was recorded (UTC)

    # Late for 28 April (deadline 28 March) but in time for the next boundary: one more term, on the start day.
    assert run(database_url, terms.renew_all_due, at(2027, 7, 1)) == {"licences": 1, "terms_created": 1}
    after = run(database_url, _state, licence_id)["terms"]
    assert after[-1][:3] == (at(2027, 4, 28), at(2027, 5, 31), False)
