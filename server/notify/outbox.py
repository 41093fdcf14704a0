"""Writing events: one insert in the caller's transaction, so an event exists exactly when its change does."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, exists, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from server.db.hot import Hot
from server.db.ids import new_id
from server.db.models import Delivery, Licence, OutboxEvent
from server.domain.hosts import key_hash
from server.notify.events import EVENTS

# Every activation emits an event: compiled once, run on the driver (server.db.hot).
_COLUMNS = ("id", "type", "licence_id", "data", "dedup_key", "created_at")
_INSERT = Hot(insert(OutboxEvent), columns=_COLUMNS)
_KEYED_EVENT = {
    "postgresql": postgresql.insert(OutboxEvent).on_conflict_do_nothing(index_elements=["dedup_key"]),
    "sqlite": sqlite.insert(OutboxEvent).on_conflict_do_nothing(index_elements=["dedup_key"]),
}


def emit(
    conn: Connection, type: str, licence_id: uuid.UUID | None, data: dict[str, Any], now: datetime,
    *, key: str | None = None,
) -> bool:  # fmt: skip
    """Records an event. With a `key`, at most one event ever has it (date-driven events, across processes);
    returns False when it already existed."""
    values = event_row(type, licence_id, data, now, key=key)
    if key is None:
        write_event(conn, values)
        return True
    return bool(conn.execute(_KEYED_EVENT[conn.dialect.name], values).rowcount)


def event_row(
    type: str, licence_id: uuid.UUID | None, data: dict[str, Any], now: datetime, *, key: str | None = None
) -> dict[str, Any]:
    """An outbox row for emit(), or for a caller that writes it in a statement of its own."""
    if type not in EVENTS:
        raise ValueError(f"unknown event type {type!r}")
    return {
        "id": new_id(),
        "type": type,
        "licence_id": licence_id,
        "data": orjson.loads(orjson.dumps(data, default=str)),  # ids and instants as text, once
        "dedup_key": key,
        "created_at": now,
    }


def write_event(conn: Connection, row: dict[str, Any]) -> None:
    """Inserts a row from event_row() (one without a `key`)."""
    _INSERT.execute(conn, row)


# The one-time part of a portal link, in the data of events whose kind is `secret`.
SECRET_FIELD = "token"  # noqa: S105 - a field name, not a password


def forget_secret(conn: Connection, event_id: uuid.UUID) -> bool:
    """Drops the one-time link from a secret event once no delivery of it is pending (sent, given up, or
    nobody to send it to): the outbox is a log, and a log must not hold a working password link."""
    row = conn.execute(select(OutboxEvent.type, OutboxEvent.data).where(OutboxEvent.id == event_id)).first()
    if row is None or not EVENTS[row.type].secret or SECRET_FIELD not in row.data:
        return False
    pending = exists().where(Delivery.event_id == event_id, Delivery.state == "pending")
    if conn.execute(select(pending)).scalar():
        return False
    data = {k: v for k, v in row.data.items() if k != SECRET_FIELD} | {"link_forgotten": True}
    conn.execute(update(OutboxEvent).where(OutboxEvent.id == event_id).values(data=data))
    return True


def seats_exhausted(conn: Connection, request: Any, now: datetime) -> None:
    """An activation refused for seats rolled its transaction back, so this runs as a unit of its own
    afterwards. At most one per licence and hour: an agent retrying every minute is one notice, not sixty."""
    row = conn.execute(
        select(Licence.id, Licence.seats).where(Licence.key_hash == key_hash(request.licence_key))
    ).first()
    if row is None:
        return
    data = {"seats": row.seats, "hostname": request.hostname, "product": request.product}
    emit(conn, "seats.exhausted", row.id, data, now, key=f"seats.exhausted:{row.id}:{now:%Y-%m-%dT%H}")
