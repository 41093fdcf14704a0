"""Outbox retention: what has been delivered is purged after `notify_retention_days`; dead letters stay.

The delivery log is what an admin reads to answer "did they get it?", so it is kept for a while, then
dropped with its attempts; an event goes once none of its deliveries is left. A dead letter, and so its
event, stays until someone redelivers it (it is then purged like any other once delivered and old) or
discards it. An event with a unique key (the date-driven notices) is kept while its job could write it
again, however short the retention: purging it early would send the same notice twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, exists, or_, select

from server.db.database import Database
from server.db.models import Delivery, DeliveryAttempt, OutboxEvent
from server.notify.dates import LAPSED_LOOKBACK_DAYS

BATCH = 1000
EVERY = timedelta(hours=1)  # retention is counted in days: looking once an hour is plenty


def keyed_horizon(deadline_days: tuple[int, ...], expiry_days: int) -> timedelta:
    """How long the notices job can still produce a key it produced today: a threshold's window (the largest
    reminder), the expiry notice's, or the lapse look-back; plus a day for time zones."""
    return timedelta(days=max((*deadline_days, expiry_days, LAPSED_LOOKBACK_DAYS)) + 2)


def purge_unit(conn: Connection, now: datetime, retention: timedelta, keyed: timedelta) -> tuple[int, int]:
    """One batch: delivered deliveries older than `retention` (their attempts with them), then fanned-out
    events older than that with no delivery left. Returns (deliveries, events) removed."""
    cutoff = now - retention
    old = list(
        conn.execute(
            select(Delivery.id)
            .where(Delivery.state == "delivered", Delivery.delivered_at < cutoff)
            .order_by(Delivery.delivered_at)
            .limit(BATCH)
        ).scalars()
    )
    if old:
        conn.execute(delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(old)))
        conn.execute(delete(Delivery).where(Delivery.id.in_(old)))
    left = exists().where(Delivery.event_id == OutboxEvent.id)
    events = list(
        conn.execute(
            select(OutboxEvent.id)
            .where(
                OutboxEvent.fanned_out_at.is_not(None),
                OutboxEvent.fanned_out_at < cutoff,
                or_(OutboxEvent.dedup_key.is_(None), OutboxEvent.created_at < now - max(retention, keyed)),
                ~left,
            )
            .limit(BATCH)
        ).scalars()
    )
    if events:
        conn.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(events)))
    return len(old), len(events)


def purge_all(conn: Connection, now: datetime, retention: timedelta, keyed: timedelta) -> dict[str, int]:
    """Every batch in one unit (the admin command); the server runs `purge_unit` batch by batch."""
    deliveries = events = 0
    while True:
        d, e = purge_unit(conn, now, retention, keyed)
        deliveries, events = deliveries + d, events + e
        if d < BATCH and e < BATCH:
            return {"deliveries": deliveries, "events": events}


class Retention:
    """Called every minute by the renewal loop; purges at most once an hour per process."""

    def __init__(self, settings: Any) -> None:
        self.retention = timedelta(days=settings.notify_retention_days)
        self.keyed = keyed_horizon(settings.notify_deadline_days, settings.notify_expiry_days)
        self.last: datetime | None = None

    async def __call__(self, db: Database, now: datetime) -> tuple[int, int]:
        if self.last is not None and now - self.last < EVERY:
            return 0, 0
        deliveries = events = 0
        while True:
            d, e = await db.run(purge_unit, now, self.retention, self.keyed)
            deliveries, events = deliveries + d, events + e
            if d < BATCH and e < BATCH:
                break
        self.last = now
        return deliveries, events
