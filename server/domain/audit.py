"""The audit trail's hash chain: each event's hash covers its content and the previous event's hash,
so an edited, inserted or deleted row breaks the chain (DESIGN section 2)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class Event:
    chain: str
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: Mapping[str, Any]


def event_hash(previous: str, event: Event) -> str:
    body = json.dumps(
        [event.chain, event.seq, event.at.isoformat(), event.actor, event.action, event.subject, event.details],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(f"{previous}\n{body}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Break:
    chain: str
    seq: int
    problem: str


def verify_chain(chain: str, events: Iterable[tuple[Event, str]], head: tuple[int, str] | None) -> list[Break]:
    """Walk one chain in order: sequence numbers without gaps, every hash recomputed, the head matching."""
    breaks: list[Break] = []
    previous, expected_seq = GENESIS, 1
    for event, stored in events:
        if event.seq != expected_seq:
            breaks.append(Break(chain, expected_seq, f"event {expected_seq} is missing (next found: {event.seq})"))
        if event_hash(previous, event) != stored:
            breaks.append(Break(chain, event.seq, "content does not match its hash (edited)"))
        previous, expected_seq = stored, event.seq + 1
    last_seq = expected_seq - 1
    if head is None:
        if last_seq:
            breaks.append(Break(chain, last_seq, "the chain has no head record"))
    elif head != (last_seq, previous):
        breaks.append(Break(chain, head[0], f"the head says {head[0]} events, the table holds {last_seq} (deleted)"))
    return breaks
