"""The delivery worker: fan events out to recipients, claim due deliveries, send, record every attempt.

Every server process runs one. Claims are short transactions: on PostgreSQL `FOR UPDATE SKIP LOCKED`
lets N workers take disjoint rows without waiting on each other, and a claimed row's next attempt is
pushed `notify_lease` seconds ahead, so no other worker takes it while it is being sent (on SQLite the
single writer serialises the claims). The send happens outside any transaction; its outcome is
recorded afterwards. A worker killed mid-send leaves the row to be claimed again after the lease:
delivery is at least once, and receivers de-duplicate on the event id (webhook-id, X-Tessera-Event-Id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from sqlalchemy import JSON, Connection, Integer, Text, Uuid, bindparam, cast, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from server.db.database import Database, DatabaseUnavailable
from server.db.ids import new_id
from server.db.models import Delivery, DeliveryAttempt, OutboxEvent, WebhookEndpoint
from server.notify import mail, outbox, retry, signing
from server.notify.events import EVENTS
from server.notify.routing import Batch, Routing, enrich, recipients, webhook_secrets
from server.settings import Settings

log = logging.getLogger("tessera.notify")
FAN_OUT_BATCH = 100
CLAIM_BATCH = 20
GATHER_SECONDS = 0.05
ERROR_LENGTH = 500


@dataclass(frozen=True, slots=True)
class Policy:
    base: float
    cap: float
    retry_for: float
    lease: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(settings.notify_backoff_base, settings.notify_backoff_cap, settings.notify_retry_for,
                   settings.notify_lease)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Claimed:
    id: uuid.UUID
    channel: str
    target: str
    reason: str
    body: bytes  # the event as every recipient receives it
    event: dict[str, Any]
    url: str | None
    secrets: list[str]
    endpoint_removed: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status: int | None = None
    error: str | None = None
    duration_ms: int = 0
    final: bool = False  # no point retrying (the endpoint was removed)


def event_body(event: Any) -> dict[str, Any]:
    """The Standard Webhooks payload shape: type, timestamp, data; plus our stable id."""
    return {"id": str(event.id), "type": event.type, "timestamp": event.created_at.isoformat(), "data": event.data}


def _skip_locked(conn: Connection, statement: Any) -> Any:
    return statement.with_for_update(skip_locked=True) if conn.dialect.name == "postgresql" else statement


# Built once: a fan-out runs on the same writer as the activations, and building statements per event was
# most of its cost. Bound parameters are named apart from the columns they set.
_UNFANNED = (
    select(OutboxEvent.__table__)
    .where(OutboxEvent.fanned_out_at.is_(None))
    .order_by(OutboxEvent.created_at, OutboxEvent.id)
    .limit(bindparam("limit", type_=Integer))
)
_UNFANNED_LOCKED = _UNFANNED.with_for_update(skip_locked=True)  # PostgreSQL: two workers never take one event
# The unique (event, channel, target) key is the last word if two workers ever overlap.
_DELIVERIES = {
    "postgresql": postgresql.insert(Delivery).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(Delivery).on_conflict_do_nothing(),
}
_FANNED_OUT = (
    update(OutboxEvent)
    .where(OutboxEvent.id == bindparam("event"))
    .values(data=bindparam("enriched"), fanned_out_at=bindparam("at"))
)
# PostgreSQL: the batch's events in one UPDATE from two parallel arrays, not one execution per event.
_batch = select(
    func.unnest(bindparam("events", type_=postgresql.ARRAY(Uuid()))).label("id"),
    func.unnest(bindparam("data", type_=postgresql.ARRAY(Text()))).label("data"),
).subquery("batch")
_FANNED_OUT_PG = (
    update(OutboxEvent)
    .where(OutboxEvent.id == _batch.c.id)
    .values(data=cast(_batch.c.data, JSON), fanned_out_at=bindparam("at"))
)


def fan_out(conn: Connection, routing: Routing, now: datetime, limit: int = FAN_OUT_BATCH) -> int:
    """Chooses the recipients of events not yet fanned out: one delivery each, unique per recipient. The
    batch's deliveries are one insert and its events one update, whatever its size."""
    postgres = conn.dialect.name == "postgresql"
    events = conn.execute(_UNFANNED_LOCKED if postgres else _UNFANNED, {"limit": limit}).all()
    if not events:
        return 0
    batch = Batch(conn, events)
    deliveries: list[dict[str, Any]] = []
    fanned: list[dict[str, Any]] = []
    for event in events:
        licence = batch.licences.get(event.licence_id)
        data = enrich(batch, event.type, dict(event.data))
        if licence is not None:
            data["licence"] = licence
        deliveries.extend(
            {
                "id": new_id(), "event_id": event.id, "channel": r.channel, "target": r.target,
                "endpoint_id": r.endpoint_id, "reason": r.reason, "state": "pending", "attempts": 0,
                "next_attempt_at": now, "retry_from": now, "created_at": now,
            }
            for r in recipients(batch, event.type, licence, routing, data)
        )  # fmt: skip
        fanned.append({"event": event.id, "enriched": data, "at": now})
    if deliveries:
        conn.execute(_DELIVERIES["postgresql" if postgres else "sqlite"], deliveries)
    if postgres:
        conn.execute(_FANNED_OUT_PG, {"events": [f["event"] for f in fanned], "at": now,
                                      "data": [orjson.dumps(f["enriched"]).decode() for f in fanned]})  # fmt: skip
    else:
        conn.execute(_FANNED_OUT, fanned)
    for event in events:
        if EVENTS[event.type].secret:
            outbox.forget_secret(conn, event.id)  # nobody to send a link to (no mail configured): it is not kept
    return len(events)


def claim(conn: Connection, worker: str, now: datetime, lease: float, limit: int = CLAIM_BATCH) -> list[Claimed]:
    due = _skip_locked(
        conn,
        select(Delivery.id)
        .where(Delivery.state == "pending", Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at)
        .limit(limit),
    )
    ids = list(conn.execute(due).scalars())
    if not ids:
        return []
    conn.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids))
        .values(next_attempt_at=now + timedelta(seconds=lease), claimed_by=worker)
    )
    rows = conn.execute(
        select(
            Delivery.id, Delivery.channel, Delivery.target, Delivery.reason, OutboxEvent.id.label("event_id"),
            OutboxEvent.type, OutboxEvent.created_at, OutboxEvent.data, WebhookEndpoint.url, WebhookEndpoint.secret,
            WebhookEndpoint.previous_secret, WebhookEndpoint.previous_secret_until, WebhookEndpoint.removed_at,
        )
        .join(OutboxEvent, OutboxEvent.id == Delivery.event_id)
        .outerjoin(WebhookEndpoint, WebhookEndpoint.id == Delivery.endpoint_id)
        .where(Delivery.id.in_(ids))
    ).all()  # fmt: skip
    claimed = []
    for r in rows:
        event = {"id": str(r.event_id), "type": r.type, "timestamp": r.created_at.isoformat(), "data": r.data}
        claimed.append(
            Claimed(
                id=r.id, channel=r.channel, target=r.target, reason=r.reason, event=event,
                body=orjson.dumps(event, option=orjson.OPT_SORT_KEYS), url=r.url,
                secrets=webhook_secrets(r, now) if r.secret else [], endpoint_removed=r.removed_at is not None,
            )
        )  # fmt: skip
    return claimed


def record(conn: Connection, delivery_id: uuid.UUID, worker: str, outcome: Outcome, policy: Policy, now: datetime,
           jitter: float) -> str:  # fmt: skip
    """Keeps the attempt; then delivered, retried later with backoff, or dead-lettered (and the vendor told)."""
    conn.execute(
        insert(DeliveryAttempt).values(
            id=new_id(), delivery_id=delivery_id, at=now, ok=outcome.ok, status=outcome.status,
            error=(outcome.error or "")[:ERROR_LENGTH] or None, duration_ms=outcome.duration_ms,
        )
    )  # fmt: skip
    row = conn.execute(
        select(Delivery.__table__, OutboxEvent.type.label("event_type"))
        .join(OutboxEvent, OutboxEvent.id == Delivery.event_id)
        .where(Delivery.id == delivery_id)
        .with_for_update(of=Delivery)
    ).one()
    attempts = row.attempts + 1
    common = {"attempts": attempts, "last_status": outcome.status, "claimed_by": None,
              "last_error": (outcome.error or "")[:ERROR_LENGTH] or None}  # fmt: skip
    if outcome.ok:
        conn.execute(update(Delivery).where(Delivery.id == delivery_id)
                     .values(state="delivered", delivered_at=now, **common))  # fmt: skip
        if EVENTS[row.event_type].secret:
            outbox.forget_secret(conn, row.event_id)
        return "delivered"
    if row.state != "pending":
        return str(row.state)
    if row.claimed_by != worker:
        # Our lease ran out and another worker holds the delivery now: its outcome decides what comes next.
        conn.execute(update(Delivery).where(Delivery.id == delivery_id).values(attempts=attempts))
        return "superseded"
    if outcome.final or retry.gives_up(row.retry_from, now, retry_for=policy.retry_for):
        conn.execute(update(Delivery).where(Delivery.id == delivery_id).values(state="dead", dead_at=now, **common))
        if EVENTS[row.event_type].secret:
            outbox.forget_secret(conn, row.event_id)  # a link that could not be sent is issued anew, never resent
        # Nobody is told of a delivery to a removed endpoint; a dead letter about a dead letter would never end.
        if not outcome.final and row.event_type != "delivery.dead-lettered":
            outbox.emit(conn, "delivery.dead-lettered", None, {
                "delivery_id": delivery_id, "event_id": row.event_id, "event_type": row.event_type,
                "channel": row.channel, "target": row.target, "attempts": attempts,
                "last_error": common["last_error"] or f"status {outcome.status}",
            }, now)  # fmt: skip
        return "dead"
    wait = retry.backoff(attempts, base=policy.base, cap=policy.cap, jitter=jitter)
    conn.execute(update(Delivery).where(Delivery.id == delivery_id).values(next_attempt_at=now + wait, **common))
    return "retry"


class Notifier:
    """One per server process, started from the app's cleanup_ctx."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.policy = Policy.from_settings(settings)
        self.routing = Routing(bool(settings.smtp_host), settings.support_address, settings.vendor_address)
        self.smtp = mail.SmtpConfig(
            settings.smtp_host, settings.smtp_port, settings.smtp_security, settings.smtp_sender,
            settings.smtp_timeout, Path(settings.smtp_credentials_file) if settings.smtp_credentials_file else None,
            Path(settings.smtp_ca_file) if settings.smtp_ca_file else None,
        )  # fmt: skip
        self.worker = f"{os.uname().nodename[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        self._random = random.SystemRandom()
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout)
        # No redirects: a receiver's 3xx is an answer, not an invitation to post the event elsewhere.
        self._http = aiohttp.ClientSession(timeout=timeout, headers={"user-agent": "tessera-webhooks/1"})

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def run_once(self, now: datetime) -> int:
        """One round: fan out, claim, send (concurrently), record. Returns how much work it found."""
        fanned = await self.db.run(fan_out, self.routing, now)
        claimed = await self.db.run(claim, self.worker, now, self.policy.lease)
        outcomes = await asyncio.gather(*(self._send(c) for c in claimed))
        for delivery, outcome in zip(claimed, outcomes, strict=True):
            state = await self.db.run(
                record, delivery.id, self.worker, outcome, self.policy, _utcnow(), self._random.random()
            )
            log.info("delivery %s to %s: %s", delivery.event["type"], delivery.channel, state,
                     extra={"delivery_id": str(delivery.id), "event_id": delivery.event["id"], "state": state,
                            "status": outcome.status})  # fmt: skip
        return fanned + len(claimed)

    async def _send(self, delivery: Claimed) -> Outcome:
        started = time.monotonic()
        try:
            outcome = await (self._post(delivery) if delivery.channel == "webhook" else self._mail(delivery))
        except Exception as exc:  # any failure of one delivery is that delivery's attempt, recorded and retried
            outcome = Outcome(False, error=f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH])
        return Outcome(outcome.ok, outcome.status, outcome.error, int((time.monotonic() - started) * 1000),
                       outcome.final)  # fmt: skip

    async def _post(self, delivery: Claimed) -> Outcome:
        if delivery.endpoint_removed or delivery.url is None:
            return Outcome(False, error="the endpoint was removed", final=True)
        assert self._http is not None
        headers = signing.headers(delivery.event["id"], delivery.body, _utcnow(), delivery.secrets)
        async with self._http.post(delivery.url, data=delivery.body, headers=headers, allow_redirects=False) as answer:
            await answer.read()
            if 200 <= answer.status < 300:
                return Outcome(True, answer.status)
            return Outcome(False, answer.status, f"the receiver answered {answer.status}")

    async def _mail(self, delivery: Claimed) -> Outcome:
        if not self.smtp.host:
            return Outcome(False, error="no SMTP host is configured (smtp_host)")
        try:
            message = mail.render(delivery.event, delivery.target, delivery.reason, self.smtp.sender,
                                  self.settings.public_url)  # fmt: skip
        except mail.LinkForgotten as exc:
            return Outcome(False, error=str(exc), final=True)
        await mail.send(self.smtp, message)
        return Outcome(True)

    async def loop(self) -> None:
        while True:
            found = 0
            try:
                found = await self.run_once(_utcnow())
            except DatabaseUnavailable:
                log.warning("notifications: database unavailable, will retry")
            except Exception:  # the worker must outlive one bad row; the next round retries
                log.exception("notifications: round failed, will retry")
            if not found:
                await asyncio.sleep(self.settings.notify_poll_interval)
            elif found < FAN_OUT_BATCH:
                # Caught up: let the next events gather for a moment, so a stream of them (an activation
                # each) is fanned out and claimed in batches, not a round of statements per event.
                await asyncio.sleep(GATHER_SECONDS)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@contextlib.asynccontextmanager
async def running(db: Database, settings: Settings) -> Any:
    notifier = Notifier(db, settings)
    await notifier.start()
    task = asyncio.create_task(notifier.loop()) if settings.notify_worker else None
    try:
        yield notifier
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await notifier.close()
