"""Webhook endpoints, the delivery log, redelivery and people's opt-outs (docs/NOTIFICATIONS.md).

Admins register endpoints for any event; a reseller's endpoints hear only of its own customers'
licences (002) and a reseller sees and changes only its own endpoints. Each function is one unit of work.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Select, delete, insert, select, update

from server.db.ids import new_id
from server.db.models import Delivery, DeliveryAttempt, NotificationOptOut, OutboxEvent, User, WebhookEndpoint
from server.domain.access import ADMIN, CUSTOMER_ROLES, RESELLER
from server.domain.errors import Conflict, NotFound, RoleForbidden, ValidationFailed
from server.notify import signing
from server.notify.events import EVENT_TYPES, EVENTS, OPT_OUT_ALL
from server.services import audit
from server.services.access import Principal, parse_id
from server.services.listing import Page, Slice, cut, keyset

MAX_ENDPOINTS_PER_OWNER = 20
DELIVERY_STATES = ("pending", "delivered", "dead")


def _manager(who: Principal) -> None:
    if who.role not in (ADMIN, RESELLER):
        raise RoleForbidden(f"the {who.role} role may not manage webhooks", action="webhooks:manage", role=who.role)


def _check_url(url: str, who: Principal, private_targets: bool) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or len(url) > 2000:
        raise ValidationFailed("url must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise ValidationFailed("url must not carry credentials: verify the signature instead")
    if who.role == RESELLER and not private_targets:
        # A reseller's endpoint is somebody else's server: never ours, a private network or plain HTTP.
        if parts.scheme != "https":
            raise ValidationFailed("a reseller's webhook URL must use https://")
        try:
            address = ipaddress.ip_address(parts.hostname)
        except ValueError:
            address = None
        if parts.hostname == "localhost" or (address is not None and not address.is_global):
            raise ValidationFailed("the webhook URL must not point at a private or loopback address")
    return url


def _event_types(types: list[str] | None) -> list[str]:
    chosen = sorted(set(types or []))
    unknown = [t for t in chosen if t not in EVENTS or not EVENTS[t].webhooks]
    if unknown:
        raise ValidationFailed(f"unknown event types: {', '.join(unknown)} (known: {', '.join(EVENT_TYPES)})")
    return chosen


def endpoint_json(r: Any, now: datetime) -> dict[str, Any]:
    overlapping = r.previous_secret_until is not None and now < r.previous_secret_until
    return {
        "id": str(r.id),
        "url": r.url,
        "events": list(r.event_types) or ["*"],
        "description": r.description,
        "reseller_id": str(r.reseller_id) if r.reseller_id else None,
        "created_at": r.created_at.isoformat(),
        "created_by": r.created_by,
        "previous_secret_valid_until": r.previous_secret_until.isoformat() if overlapping else None,
        "removed_at": r.removed_at.isoformat() if r.removed_at else None,
    }


def add_endpoint(conn: Connection, who: Principal, url: str, events: list[str] | None, description: str,
                 now: datetime, *, private_targets: bool = False) -> dict[str, Any]:  # fmt: skip
    """A new endpoint; its secret (whsec_…) is shown once, here."""
    _manager(who)
    url = _check_url(url, who, private_targets)
    types = _event_types(events)
    reseller_id = who.owner_id if who.role == RESELLER else None
    owner = WebhookEndpoint.reseller_id.is_(None) if reseller_id is None else WebhookEndpoint.reseller_id == reseller_id
    live = conn.execute(select(WebhookEndpoint.id).where(owner, WebhookEndpoint.removed_at.is_(None))).all()
    if len(live) >= MAX_ENDPOINTS_PER_OWNER:
        raise Conflict(f"at most {MAX_ENDPOINTS_PER_OWNER} endpoints: remove one first")
    endpoint_id = new_id()
    secret = signing.new_secret()
    conn.execute(
        insert(WebhookEndpoint).values(
            id=endpoint_id, url=url, reseller_id=reseller_id, event_types=types, description=description[:200],
            secret=secret, created_by=who.actor, created_at=now,
        )
    )  # fmt: skip
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="webhook.add",
                 subject=f"webhook:{endpoint_id}", details={"url": url, "events": types}, now=now)  # fmt: skip
    return _endpoint(conn, who, endpoint_id, now) | {"secret": secret}


def _endpoint_row(conn: Connection, who: Principal, endpoint_id: str | uuid.UUID, *, lock: bool = False) -> Any:
    eid = parse_id(endpoint_id, "webhook endpoint")
    statement = select(WebhookEndpoint.__table__).where(WebhookEndpoint.id == eid)
    if lock:
        statement = statement.with_for_update()
    row = conn.execute(statement).first()
    if row is None or (who.role == RESELLER and row.reseller_id != who.owner_id):
        raise NotFound(f"no webhook endpoint {str(endpoint_id)!r}")
    return row


def _endpoint(conn: Connection, who: Principal, endpoint_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    return endpoint_json(_endpoint_row(conn, who, endpoint_id), now)


def _endpoints_statement(who: Principal) -> Select[Any]:
    _manager(who)
    statement = select(WebhookEndpoint.__table__).where(WebhookEndpoint.removed_at.is_(None))
    if who.role == RESELLER:
        statement = statement.where(WebhookEndpoint.reseller_id == who.owner_id)
    return statement


def list_endpoints(conn: Connection, who: Principal, now: datetime) -> list[dict[str, Any]]:
    statement = _endpoints_statement(who).order_by(WebhookEndpoint.created_at)
    return [endpoint_json(r, now) for r in conn.execute(statement)]


def endpoints_page(conn: Connection, who: Principal, now: datetime, page: Page) -> Slice:
    """One page of the endpoints, oldest first by (created_at, id)."""
    columns = (WebhookEndpoint.created_at, WebhookEndpoint.id)
    rows = conn.execute(keyset(_endpoints_statement(who), columns, page)).all()
    return cut(rows, page, lambda r: (r.created_at, r.id), lambda r: endpoint_json(r, now))


def remove_endpoint(conn: Connection, who: Principal, endpoint_id: str, now: datetime) -> dict[str, Any]:
    """Kept (its delivery log stays readable), but hears of nothing more; pending deliveries are given up."""
    _manager(who)
    row = _endpoint_row(conn, who, endpoint_id, lock=True)
    if row.removed_at is not None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}")
    conn.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == row.id).values(removed_at=now))
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="webhook.remove",
                 subject=f"webhook:{row.id}", details={"url": row.url}, now=now)  # fmt: skip
    return _endpoint(conn, who, row.id, now)


def rotate_secret(conn: Connection, who: Principal, endpoint_id: str, overlap_seconds: float,
                  now: datetime) -> dict[str, Any]:  # fmt: skip
    """A new secret; the previous one still signs (a second signature) for the overlap, so receivers can
    switch without losing a delivery."""
    _manager(who)
    row = _endpoint_row(conn, who, endpoint_id, lock=True)
    if row.removed_at is not None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}")
    secret = signing.new_secret()
    until = now + timedelta(seconds=overlap_seconds)
    conn.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == row.id)
        .values(secret=secret, previous_secret=row.secret, previous_secret_until=until)
    )
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="webhook.rotate",
                 subject=f"webhook:{row.id}", details={"previous_valid_until": until.isoformat()}, now=now)  # fmt: skip
    return _endpoint(conn, who, row.id, now) | {"secret": secret}


def delivery_json(r: Any) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "event_id": str(r.event_id),
        "event_type": r.event_type,
        "channel": r.channel,
        "target": r.target,
        "endpoint_id": str(r.endpoint_id) if r.endpoint_id else None,
        "state": r.state,
        "attempts": r.attempts,
        "last_status": r.last_status,
        "last_error": r.last_error,
        "next_attempt_at": r.next_attempt_at.isoformat() if r.state == "pending" else None,
        "created_at": r.created_at.isoformat(),
        "delivered_at": r.delivered_at.isoformat() if r.delivered_at else None,
        "dead_at": r.dead_at.isoformat() if r.dead_at else None,
    }


_DELIVERIES = select(Delivery.__table__, OutboxEvent.type.label("event_type")).join(
    OutboxEvent, OutboxEvent.id == Delivery.event_id
)


def _deliveries_statement(conn: Connection, who: Principal, endpoint_id: str | None, state: str | None) -> Select[Any]:
    _manager(who)
    statement = _DELIVERIES
    if endpoint_id is not None:
        statement = statement.where(Delivery.endpoint_id == _endpoint_row(conn, who, endpoint_id).id)
    elif who.role != ADMIN:
        own = select(WebhookEndpoint.id).where(WebhookEndpoint.reseller_id == who.owner_id)
        statement = statement.where(Delivery.endpoint_id.in_(own))
    if state is not None:
        if state not in DELIVERY_STATES:
            raise ValidationFailed(f"state must be one of {', '.join(DELIVERY_STATES)}")
        statement = statement.where(Delivery.state == state)
    return statement


def list_deliveries(conn: Connection, who: Principal, endpoint_id: str | None, state: str | None,
                    limit: int = 100) -> list[dict[str, Any]]:  # fmt: skip
    """The delivery log: an endpoint's (its owner), or every channel's, e-mail included (admins)."""
    statement = _deliveries_statement(conn, who, endpoint_id, state)
    rows = conn.execute(statement.order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit))
    return [delivery_json(r) for r in rows]


def deliveries_page(conn: Connection, who: Principal, endpoint_id: str | None, state: str | None,
                    page: Page) -> Slice:  # fmt: skip
    """One page of the delivery log, newest first by (created_at, id), as the log is read."""
    statement = _deliveries_statement(conn, who, endpoint_id, state)
    rows = conn.execute(keyset(statement, (Delivery.created_at, Delivery.id), page, newest_first=True)).all()
    return cut(rows, page, lambda r: (r.created_at, r.id), delivery_json)


def show_delivery(conn: Connection, who: Principal, delivery_id: str) -> dict[str, Any]:
    row = _delivery_row(conn, who, delivery_id)
    attempts = conn.execute(
        select(DeliveryAttempt.__table__).where(DeliveryAttempt.delivery_id == row.id).order_by(DeliveryAttempt.at)
    )
    return delivery_json(row) | {
        "attempt_log": [
            {"at": a.at.isoformat(), "ok": a.ok, "status": a.status, "error": a.error, "duration_ms": a.duration_ms}
            for a in attempts
        ]
    }


def _delivery_row(conn: Connection, who: Principal, delivery_id: str, *, lock: bool = False) -> Any:
    _manager(who)
    did = parse_id(delivery_id, "delivery")
    statement = _DELIVERIES.where(Delivery.id == did)
    if lock:
        statement = statement.with_for_update(of=Delivery)
    row = conn.execute(statement).first()
    if row is None:
        raise NotFound(f"no delivery {delivery_id!r}")
    if who.role != ADMIN:
        if row.endpoint_id is None:
            raise NotFound(f"no delivery {delivery_id!r}")
        _endpoint_row(conn, who, row.endpoint_id)
    return row


def redeliver(conn: Connection, who: Principal, delivery_id: str, now: datetime) -> dict[str, Any]:
    """Send it again now, with the same event id, and retry afresh if it fails (a dead letter revived)."""
    row = _delivery_row(conn, who, delivery_id, lock=True)
    if row.state == "pending":
        raise Conflict("this delivery is still being tried: wait for it, or for its dead letter")
    if EVENTS[row.event_type].secret:
        raise Conflict("a one-time portal link is never sent twice: issue a new one (tessera-admin user reset)")
    conn.execute(
        update(Delivery)
        .where(Delivery.id == row.id)
        .values(state="pending", next_attempt_at=now, retry_from=now, dead_at=None, claimed_by=None)
    )
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="delivery.redeliver",
                 subject=f"delivery:{row.id}", details={"event": str(row.event_id), "was": row.state},
                 now=now)  # fmt: skip
    return delivery_json(_delivery_row(conn, who, str(row.id)))


def discard_delivery(conn: Connection, who: Principal, delivery_id: str, now: datetime) -> dict[str, Any]:
    """An admin gives a dead letter up for good: it and its attempts go (retention keeps dead ones otherwise)."""
    if who.role != ADMIN:
        raise RoleForbidden("only an admin discards dead letters", action="deliveries:discard", role=who.role)
    row = _delivery_row(conn, who, delivery_id, lock=True)
    if row.state != "dead":
        raise Conflict(f"only a dead letter is discarded; this delivery is {row.state}")
    conn.execute(delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id == row.id))
    conn.execute(delete(Delivery).where(Delivery.id == row.id))
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="delivery.discard",
                 subject=f"delivery:{row.id}", details={"event": str(row.event_id), "target": row.target},
                 now=now)  # fmt: skip
    return delivery_json(row) | {"state": "discarded"}


# -- opt-outs -------------------------------------------------------------------------------------------


def _person(conn: Connection, who: Principal) -> Any:
    if who.user_id is None:
        raise RoleForbidden(
            "notification settings belong to a person: use a token created for a user (--user)",
            action="notifications:opt-out",
            role=who.role,
        )
    user = conn.execute(select(User.__table__).where(User.id == who.user_id)).first()
    if user is None or (who.role in CUSTOMER_ROLES and user.customer_id != who.owner_id):
        raise NotFound("no such user")
    return user


def opt_outs(conn: Connection, who: Principal) -> dict[str, Any]:
    user = _person(conn, who)
    chosen = conn.execute(select(NotificationOptOut.event_type).where(NotificationOptOut.user_id == user.id)).scalars()
    return {
        "user_id": str(user.id),
        "opted_out": sorted(chosen),
        "optional": sorted(t for t, k in EVENTS.items() if not k.essential),
        "essential": sorted(t for t, k in EVENTS.items() if k.essential),
    }


def set_opt_outs(conn: Connection, who: Principal, types: list[str], now: datetime) -> dict[str, Any]:
    """Replaces the caller's opt-outs; '*' is every notice that is not essential. Essential ones
    (deadlines, renewal confirmations) cannot be switched off."""
    user = _person(conn, who)
    chosen = sorted(set(types))
    for t in chosen:
        if t != OPT_OUT_ALL and t not in EVENTS:
            raise ValidationFailed(f"unknown event type {t!r}")
        if t != OPT_OUT_ALL and EVENTS[t].essential:
            raise ValidationFailed(f"{t} is essential (it concerns the contract): it cannot be switched off")
    conn.execute(delete(NotificationOptOut).where(NotificationOptOut.user_id == user.id))
    if chosen:
        conn.execute(insert(NotificationOptOut), [{"user_id": user.id, "event_type": t, "created_at": now}
                                                  for t in chosen])  # fmt: skip
    return opt_outs(conn, who)
