"""Writing events: one insert in the caller's transaction, so an event exists exactly when its change does."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from server.db.ids import new_id
from server.db.models import Licence, OutboxEvent
from server.domain.hosts import key_hash
from server.notify.events import EVENTS


def emit(
    conn: Connection, type: str, licence_id: uuid.UUID | None, data: dict[str, Any], now: datetime,
    *, key: str | None = None,
) -> bool:  # fmt: skip
    """Records an event. With a `key`, at most one event ever has it (date-driven events, across processes);
    returns False when it already existed."""
    if type not in EVENTS:
        raise ValueError(f"unknown event type {type!r}")
    values = {
        "id": new_id(),
        "type": type,
        "licence_id": licence_id,
        "data": orjson.loads(orjson.dumps(data, default=str)),  # ids and instants as text, once
        "dedup_key": key,
        "created_at": now,
    }
    if key is None:
        conn.execute(insert(OutboxEvent).values(**values))
        return True
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(OutboxEvent).values(**values).on_conflict_do_nothing(index_elements=["dedup_key"])
    return bool(conn.execute(statement).rowcount)


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
