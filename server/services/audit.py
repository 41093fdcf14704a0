"""Append to and verify the hash-chained audit trail. Appending locks the chain's head row, so
several server processes append in turn; licence chains are already serialised by the licence lock."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from server.db.hot import Hot
from server.db.models import AuditChain, AuditEvent
from server.domain.audit import GENESIS, Break, Event, event_hash, verify_chain
from server.services.access import Principal

VENDOR_CHAIN = "vendor"


def licence_chain(licence_id: uuid.UUID) -> str:
    return f"licence:{licence_id}"


# Every activation appends an event: these statements are compiled once and run on the driver (server.db.hot).
_HEAD = Hot(select(AuditChain.seq, AuditChain.hash).where(AuditChain.chain == bindparam("chain")).with_for_update())
# The first event of a chain creates its head; of two racing first events one inserts, both then lock it.
_HEAD_COLUMNS = ("chain", "seq", "hash")
_NEW_HEAD = {
    "postgresql": Hot(pg_insert(AuditChain).on_conflict_do_nothing(), columns=_HEAD_COLUMNS),
    "sqlite": Hot(sqlite_insert(AuditChain).on_conflict_do_nothing(), columns=_HEAD_COLUMNS),
}
_INSERT_EVENT = Hot(insert(AuditEvent), columns=("chain", "seq", "at", "actor", "action", "subject", "details", "hash"))
_MOVE_HEAD = Hot(
    update(AuditChain).where(AuditChain.chain == bindparam("head")).values(seq=bindparam("seq"), hash=bindparam("hash"))
)


def record(
    conn: Connection,
    *,
    chain: str,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any],
    now: datetime,
) -> int:
    event = next_event(conn, chain=chain, actor=actor, action=action, subject=subject, details=details, now=now)
    write(conn, event)
    return int(event["seq"])


def write(conn: Connection, event: Mapping[str, Any]) -> None:
    """Appends an event from next_event(), in the transaction that locked the head."""
    _INSERT_EVENT.execute(conn, event)
    _MOVE_HEAD.execute(conn, {"head": event["chain"], "seq": event["seq"], "hash": event["hash"]})


def next_event(
    conn: Connection,
    *,
    chain: str,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The chain's head locked and the next event hashed: the row to insert, whose `seq` and `hash` then
    become the head's (record() writes both; a caller may write them in a statement of its own)."""
    head = _HEAD.first(conn, {"chain": chain})
    if head is None:
        _NEW_HEAD[conn.dialect.name].execute(conn, {"chain": chain, "seq": 0, "hash": GENESIS})
        head = _HEAD.first(conn, {"chain": chain})
    event = Event(chain, head.seq + 1, now, actor, action, subject, dict(details))
    return {
        "chain": chain,
        "seq": event.seq,
        "at": now,
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": event.details,
        "hash": event_hash(head.hash, event),
    }


def verify(conn: Connection) -> dict[str, Any]:
    """Every chain walked in order; a head without events and events without a head are both breaks."""
    heads = {r.chain: (r.seq, r.hash) for r in conn.execute(select(AuditChain.chain, AuditChain.seq, AuditChain.hash))}
    rows = conn.execute(select(AuditEvent.__table__).order_by(AuditEvent.chain, AuditEvent.seq))
    breaks: list[Break] = []
    chains: dict[str, list[tuple[Event, str]]] = {}
    events = 0
    for r in rows:
        chains.setdefault(r.chain, []).append(
            (Event(r.chain, r.seq, r.at, r.actor, r.action, r.subject, r.details), r.hash)
        )
        events += 1
    for chain in sorted(set(chains) | set(heads)):
        breaks.extend(verify_chain(chain, chains.get(chain, []), heads.get(chain)))
    anchor = hashlib.sha256("".join(f"{c}:{seq}:{h}\n" for c, (seq, h) in sorted(heads.items())).encode())
    return {
        "ok": not breaks,
        "heads_digest": anchor.hexdigest(),  # copy it elsewhere: a later verify must extend, not replace it
        "chains": len(set(chains) | set(heads)),
        "events": events,
        "breaks": [{"chain": b.chain, "seq": b.seq, "problem": b.problem} for b in breaks],
    }


def list_events(conn: Connection, who: Principal, subject: str | None, limit: int) -> list[dict[str, Any]]:
    who.may("audit:read")
    statement = select(AuditEvent.__table__).order_by(AuditEvent.at.desc(), AuditEvent.seq.desc()).limit(limit)
    if subject:
        statement = statement.where(AuditEvent.subject == subject)
    return [event_json(r) for r in conn.execute(statement)]


def event_json(r: Any) -> dict[str, Any]:
    return {
        "chain": r.chain,
        "seq": r.seq,
        "at": r.at.isoformat(),
        "actor": r.actor,
        "action": r.action,
        "subject": r.subject,
        "details": r.details,
        "hash": r.hash,
    }
