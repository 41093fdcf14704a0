"""Who hears of an event: chosen once, when the worker fans an event out into one delivery per recipient."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, or_, select

from server.db.models import (
    Activation,
    AuditEvent,
    Customer,
    Licence,
    MaintenanceTerm,
    NotificationOptOut,
    Plan,
    Product,
    Reseller,
    TransferRequest,
    User,
    WebhookEndpoint,
)
from server.domain.access import CUSTOMER_ROLES
from server.notify.events import EVENTS, OPT_OUT_ALL


@dataclass(frozen=True, slots=True)
class Routing:
    email: bool  # an SMTP host is configured; without one no mail deliveries are made
    support_address: str
    vendor_address: str


@dataclass(frozen=True, slots=True)
class Recipient:
    channel: str  # email | webhook
    target: str  # address, or endpoint id
    reason: str  # contact | owner | person | reseller | support | vendor | webhook
    endpoint_id: uuid.UUID | None = None


def licence_context(conn: Connection, licence_id: uuid.UUID | None) -> dict[str, Any] | None:
    if licence_id is None:
        return None
    latest = select(func.max(MaintenanceTerm.ends_at)).where(MaintenanceTerm.licence_id == Licence.id)
    row = conn.execute(
        select(
            Licence.id, Licence.status, Licence.seats, Licence.customer_id, Customer.name.label("customer"),
            Customer.reseller_id, Reseller.name.label("reseller"), Product.code.label("product"),
            Plan.name.label("plan"), Plan.kind, Plan.model,
            latest.correlate(Licence).scalar_subquery().label("maintenance_until"),
        )
        .join(Customer, Customer.id == Licence.customer_id)
        .outerjoin(Reseller, Reseller.id == Customer.reseller_id)
        .join(Product, Product.id == Licence.product_id)
        .join(Plan, Plan.id == Licence.plan_id)
        .where(Licence.id == licence_id)
    ).first()  # fmt: skip
    if row is None:
        return None
    return {
        "id": str(row.id),
        "status": row.status,
        "seats": row.seats,
        "customer_id": str(row.customer_id),
        "customer": row.customer,
        "reseller_id": str(row.reseller_id) if row.reseller_id else None,
        "reseller": row.reseller,
        "product": row.product,
        "plan": row.plan,
        "kind": row.kind,
        "model": row.model,
        "maintenance_until": row.maintenance_until.isoformat() if row.maintenance_until else None,
    }


def enrich(conn: Connection, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Facts the emitting service did not have to hand (one line there), looked up once here."""
    if event_type.startswith("activation.") and "hostname" not in data and data.get("activation_id"):
        hostname = conn.execute(
            select(Activation.hostname).where(Activation.id == uuid.UUID(data["activation_id"]))
        ).scalar_one_or_none()
        data = data | {"hostname": hostname}
    return data


def _people(conn: Connection, condition: Any, event_type: str, essential: bool) -> list[str]:
    statement = select(User.id, User.email).where(condition, User.disabled_at.is_(None))
    if not essential:
        opted_out = select(NotificationOptOut.user_id).where(
            NotificationOptOut.event_type.in_((event_type, OPT_OUT_ALL))
        )
        statement = statement.where(User.id.not_in(opted_out))
    return [r.email.lower() for r in conn.execute(statement.order_by(User.email))]


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def machine_users(conn: Connection, event_type: str, data: dict[str, Any]) -> set[uuid.UUID]:
    """The people whose machine an event is about, from what they did before it happened (fan-out may run
    later, and must not count what came after): whoever asked for the transfer (its decision; the seat it
    made), and for a seat that ended, whoever asked to move it or released it themselves (the audit trail)."""
    if event_type.startswith("transfer."):
        transfer = _uuid(data.get("transfer_id"))
        if transfer is None:
            return set()
        return set(conn.execute(select(TransferRequest.requested_by).where(TransferRequest.id == transfer)).scalars())
    activation = _uuid(data.get("activation_id"))
    if activation is None:
        return set()
    if event_type == "activation.created":
        made = select(TransferRequest.requested_by).where(TransferRequest.new_activation_id == activation)
        return set(conn.execute(made).scalars())
    asked = select(TransferRequest.requested_by).where(
        or_(TransferRequest.activation_id == activation, TransferRequest.new_activation_id == activation)
    )
    users = set(conn.execute(asked).scalars())
    actors = conn.execute(
        select(AuditEvent.actor).where(
            AuditEvent.subject == f"activation:{activation}", AuditEvent.actor.like("user:%")
        )
    ).scalars()
    users |= {u for u in (_uuid(a.removeprefix("user:")) for a in actors) if u is not None}
    return users


def recipients(conn: Connection, event_type: str, licence: dict[str, Any] | None, routing: Routing,
               data: dict[str, Any] | None = None) -> list[Recipient]:  # fmt: skip
    kind = EVENTS[event_type]
    data = data or {}
    found: list[Recipient] = []
    if routing.email:
        if kind.person and (person := _uuid(data.get("user_id"))) is not None:
            for address in _people(conn, User.id == person, event_type, kind.essential):
                found.append(Recipient("email", address, "person"))
        if kind.contacts and licence is not None:
            customer = uuid.UUID(licence["customer_id"])
            for address in _people(conn, (User.customer_id == customer) & User.contact.is_not(None),
                                   event_type, kind.essential):  # fmt: skip
                found.append(Recipient("email", address, "contact"))
        if kind.owners and licence is not None and (owners := machine_users(conn, event_type, data)):
            # Only the licence holder's own people: support or an admin releasing a seat is not its user.
            customer = uuid.UUID(licence["customer_id"])
            mine = User.id.in_(owners) & (User.customer_id == customer) & User.role.in_(CUSTOMER_ROLES)
            for address in _people(conn, mine, event_type, kind.essential):
                found.append(Recipient("email", address, "owner"))
        if kind.reseller and licence is not None and licence["reseller_id"]:
            reseller = uuid.UUID(licence["reseller_id"])
            for address in _people(conn, User.reseller_id == reseller, event_type, kind.essential):
                found.append(Recipient("email", address, "reseller"))
        if kind.support and routing.support_address:
            found.append(Recipient("email", routing.support_address.lower(), "support"))
        if kind.vendor and routing.vendor_address:
            found.append(Recipient("email", routing.vendor_address.lower(), "vendor"))
    if kind.webhooks:
        # Admins' endpoints hear of every event; a reseller's only of its own customers' licences (002).
        scope: Any = WebhookEndpoint.reseller_id.is_(None)
        if licence is not None and licence["reseller_id"]:
            scope = or_(scope, WebhookEndpoint.reseller_id == uuid.UUID(licence["reseller_id"]))
        endpoints = conn.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.event_types)
            .where(WebhookEndpoint.removed_at.is_(None), scope)
            .order_by(WebhookEndpoint.created_at)
        )
        for endpoint in endpoints:
            if not endpoint.event_types or event_type in endpoint.event_types:
                found.append(Recipient("webhook", str(endpoint.id), "webhook", endpoint.id))
    unique: dict[tuple[str, str], Recipient] = {}
    for recipient in found:
        unique.setdefault((recipient.channel, recipient.target), recipient)
    return list(unique.values())


def webhook_secrets(endpoint: Any, now: datetime) -> list[str]:
    """The current secret, and the previous one while its overlap lasts."""
    keys = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_until and now < endpoint.previous_secret_until:
        keys.append(endpoint.previous_secret)
    return keys
