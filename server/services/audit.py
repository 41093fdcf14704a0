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

from server.db.models import AuditChain, AuditEvent
from server.domain.audit import GENESIS, Break, Event, event_hash, verify_chain
from server.services.access import Principal

VENDOR_CHAIN = "vendor"


def licence_chain(licence_id: uuid.UUID) -> str:
    return f"licence:{licence_id}"


# Built once with bound parameters: every activation appends an event, and building these three statements
# (and their cache keys) on each call cost more than running them.
_HEAD = select(AuditChain.seq, AuditChain.hash).where(AuditChain.chain == bindparam("chain")).with_for_update()
# The first event of a chain creates its head; of two racing first events one inserts, both then lock it.
_NEW_HEAD = {
    "postgresql": pg_insert(AuditChain).on_conflict_do_nothing(),
    "sqlite": sqlite_insert(AuditChain).on_conflict_do_nothing(),
}
_INSERT_EVENT = insert(AuditEvent)
_MOVE_HEAD = (
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
    head = conn.execute(_HEAD, {"chain": chain}).first()
    if head is None:
        conn.execute(_NEW_HEAD[conn.dialect.name], {"chain": chain, "seq": 0, "hash": GENESIS})
        head = conn.execute(_HEAD, {"chain": chain}).one()
    seq, previous = head.seq + 1, head.hash
    event = Event(chain, seq, now, actor, action, subject, dict(details))
    digest = event_hash(previous, event)
    conn.execute(
        _INSERT_EVENT,
        {
            "chain": chain,
            "seq": seq,
            "at": now,
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": event.details,
            "hash": digest,
        },
    )
    conn.execute(_MOVE_HEAD, {"head": chain, "seq": seq, "hash": digest})
    return seq


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
