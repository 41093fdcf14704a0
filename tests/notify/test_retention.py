"""Outbox retention against a real database (both backends), `now` passed in: delivered rows go after the
retention, dead letters stay until redelivered (and delivered) or discarded, keyed notices outlive their job."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, insert, select

from server.db.ids import new_id
from server.db.migrate import upgrade
from server.db.models import Delivery, DeliveryAttempt, OutboxEvent
from server.notify import outbox
from server.notify.retention import keyed_horizon, purge_all, purge_unit
from server.services import webhooks
from server.services.access import OPERATOR
from tests.conftest import LiveServer
from tests.notify.harness import wait_for
from tests.support.sql import run_unit as run

T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
RETENTION = 30 * DAY
KEYED = keyed_horizon((30, 7), 30)  # the lapse notice's 31-day look-back, and two days: 33 days


def event(conn: Connection, name: str, at: datetime, *states: str, key: str | None = None) -> uuid.UUID:
    """An event written and fanned out at `at`, with one delivery per state, settled a day later."""
    outbox.emit(conn, "licence.changed", None, {"status": "suspended", "from": "active", "name": name}, at, key=key)
    event_id = conn.execute(select(OutboxEvent.id).where(OutboxEvent.data["name"].as_string() == name)).scalar_one()
    conn.execute(OutboxEvent.__table__.update().where(OutboxEvent.id == event_id).values(fanned_out_at=at))
    settled = at + DAY
    for n, state in enumerate(states):
        delivery = new_id()
        conn.execute(insert(Delivery).values(
            id=delivery, event_id=event_id, channel="email", target=f"{name}-{n}@customer.test", reason="contact",
            state=state, attempts=1, next_attempt_at=settled, retry_from=at, created_at=at,
            delivered_at=settled if state == "delivered" else None, dead_at=settled if state == "dead" else None,
        ))  # fmt: skip
        conn.execute(insert(DeliveryAttempt).values(id=new_id(), delivery_id=delivery, at=settled,
                                                    ok=state == "delivered", duration_ms=5))  # fmt: skip
    return event_id


def seed(conn: Connection) -> None:
    old = T0 - 40 * DAY
    event(conn, "old-delivered", old, "delivered", "delivered")
    event(conn, "old-mixed", old, "delivered", "dead")
    event(conn, "old-pending", old, "pending")
    event(conn, "old-dead", old, "dead")
    event(conn, "old-nobody", old)
    event(conn, "recent-delivered", T0 - 10 * DAY, "delivered")
    # Past the retention (30 days) but inside the notices job's reach (33 days): the key must stay.
    event(conn, "old-keyed", T0 - 32 * DAY, "delivered", key="notice:licence:2027-01-01:30")
    event(conn, "ancient-keyed", T0 - KEYED - 2 * DAY, "delivered", key="notice:licence:2026-11-01:30")


def names(conn: Connection) -> list[str]:
    return sorted(conn.execute(select(OutboxEvent.data["name"].as_string())).scalars())


def deliveries_of(conn: Connection) -> dict[str, list[str]]:
    rows = conn.execute(
        select(OutboxEvent.data["name"].as_string().label("name"), Delivery.state)
        .join(OutboxEvent, OutboxEvent.id == Delivery.event_id)
        .order_by(Delivery.target)
    )
    found: dict[str, list[str]] = {}
    for r in rows:
        found.setdefault(r.name, []).append(r.state)
    return found


def count_attempts(conn: Connection) -> int:
    return len(conn.execute(select(DeliveryAttempt.id)).all())


def test_delivered_rows_go_after_the_retention_and_dead_letters_stay(database_url: str) -> None:
    upgrade(database_url)
    run(database_url, seed)
    assert run(database_url, count_attempts) == 9

    # The day before the oldest rows reach 30 days: nothing is purged.
    assert run(database_url, purge_all, T0 - 10 * DAY, RETENTION, KEYED) == {"deliveries": 0, "events": 0}
    assert run(database_url, purge_all, T0, RETENTION, KEYED) == {"deliveries": 5, "events": 3}
    assert run(database_url, names) == ["old-dead", "old-keyed", "old-mixed", "old-pending", "recent-delivered"]
    assert run(database_url, deliveries_of) == {
        "old-dead": ["dead"], "old-mixed": ["dead"], "old-pending": ["pending"], "recent-delivered": ["delivered"],
    }  # fmt: skip
    assert run(database_url, count_attempts) == 4  # the purged deliveries' attempts went with them
    # A retention of one day takes the recent one too; the keyed notice stays while its job could still write
    # it again (created 32 days before T0, 33 days' reach), and goes once past that reach.
    assert run(database_url, purge_all, T0, DAY, KEYED) == {"deliveries": 1, "events": 1}
    assert run(database_url, names) == ["old-dead", "old-keyed", "old-mixed", "old-pending"]
    assert run(database_url, purge_all, T0 + 2 * DAY, DAY, KEYED) == {"deliveries": 0, "events": 1}
    assert run(database_url, names) == ["old-dead", "old-mixed", "old-pending"]
    # Dead letters are kept however old they get.
    assert run(database_url, purge_all, T0 + 3650 * DAY, RETENTION, KEYED) == {"deliveries": 0, "events": 0}


def test_a_dead_letter_goes_once_redelivered_and_old_or_discarded(database_url: str) -> None:
    upgrade(database_url)
    run(database_url, seed)
    dead = {d["target"]: d for d in run(database_url, webhooks.list_deliveries, OPERATOR, None, "dead", 100)}
    revived, dropped = dead["old-dead-0@customer.test"], dead["old-mixed-1@customer.test"]

    run(database_url, webhooks.redeliver, OPERATOR, revived["id"], T0)

    def delivered(conn: Connection) -> None:
        conn.execute(Delivery.__table__.update().where(Delivery.id == uuid.UUID(revived["id"]))
                     .values(state="delivered", delivered_at=T0))  # fmt: skip

    run(database_url, delivered)
    discarded = run(database_url, webhooks.discard_delivery, OPERATOR, dropped["id"], T0)
    assert discarded["state"] == "discarded"
    run(database_url, purge_unit, T0, RETENTION, KEYED)
    assert "old-mixed" not in run(database_url, names)  # its delivered one was old, its dead one discarded
    assert "old-dead" in run(database_url, names)  # redelivered today: kept for the retention from now
    # A retention later, the redelivered one goes (and the recent one seeded ten days before T0).
    assert run(database_url, purge_all, T0 + RETENTION + DAY, RETENTION, KEYED)["deliveries"] == 2
    assert "old-dead" not in run(database_url, names)


def test_the_server_purges_by_itself_from_its_per_minute_job(database_url: str, tmp_path: Path) -> None:
    """The wiring: a server started with old rows in its outbox purges the delivered ones at once, keeps the
    dead letter, and keeps what was delivered within the retention."""
    server = LiveServer(database_url, tmp_path)
    now = datetime.now(UTC)

    def rows(conn: Connection) -> None:
        event(conn, "long-delivered", now - 40 * DAY, "delivered")
        event(conn, "long-dead", now - 40 * DAY, "dead")
        event(conn, "lately-delivered", now - 5 * DAY, "delivered")

    run(database_url, rows)
    server.process.extra_env = {"TESSERA_NOTIFY_RETENTION_DAYS": "30"}
    server.start()
    try:
        wait_for("the purge", lambda: "long-delivered" not in run(database_url, names))
        assert run(database_url, names) == ["lately-delivered", "long-dead"]
    finally:
        server.stop()
