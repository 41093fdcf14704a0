"""Who hears of an event: chosen once, when the worker fans an event out into one delivery per recipient."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, select

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


_LATEST_TERM = select(func.max(MaintenanceTerm.ends_at)).where(MaintenanceTerm.licence_id == Licence.id)
# Statements are built once: building a select() and its cache key on every call is what a fan-out would spend.
_LICENCES = (
    select(
        Licence.id, Licence.status, Licence.seats, Licence.customer_id, Customer.name.label("customer"),
        Customer.reseller_id, Reseller.name.label("reseller"), Product.code.label("product"),
        Plan.name.label("plan"), Plan.kind, Plan.model,
        _LATEST_TERM.correlate(Licence).scalar_subquery().label("maintenance_until"),
    )
    .join(Customer, Customer.id == Licence.customer_id)
    .outerjoin(Reseller, Reseller.id == Customer.reseller_id)
    .join(Product, Product.id == Licence.product_id)
    .join(Plan, Plan.id == Licence.plan_id)
    .where(Licence.id.in_(bindparam("licences", expanding=True)))
)  # fmt: skip
_HOSTNAMES = select(Activation.id, Activation.hostname).where(
    Activation.id.in_(bindparam("activations", expanding=True))
)
_ENDPOINTS = (
    select(WebhookEndpoint.id, WebhookEndpoint.reseller_id, WebhookEndpoint.event_types)
    .where(WebhookEndpoint.removed_at.is_(None))
    .order_by(WebhookEndpoint.created_at)
)
_OPTED_OUT = select(NotificationOptOut.user_id).where(
    NotificationOptOut.event_type.in_([bindparam("event_type"), OPT_OUT_ALL])
)
_AUDIENCES: dict[str, Any] = {
    "person": User.id == bindparam("user"),
    "contact": (User.customer_id == bindparam("customer")) & User.contact.is_not(None),
    # Only the licence holder's own people: support or an admin releasing a seat is not its user.
    "owner": (
        User.id.in_(bindparam("users", expanding=True))
        & (User.customer_id == bindparam("customer"))
        & User.role.in_(sorted(CUSTOMER_ROLES))
    ),
    "reseller": User.reseller_id == bindparam("reseller"),
}


def _people_statement(condition: Any, essential: bool) -> Any:
    statement = select(User.email).where(condition, User.disabled_at.is_(None))
    if not essential:
        statement = statement.where(User.id.not_in(_OPTED_OUT))
    return statement.order_by(User.email)


_PEOPLE = {
    (audience, essential): _people_statement(condition, essential)
    for audience, condition in _AUDIENCES.items()
    for essential in (False, True)
}
_TRANSFER_ASKED = select(TransferRequest.requested_by).where(TransferRequest.id == bindparam("transfer"))
_SEAT_MADE = select(TransferRequest.new_activation_id, TransferRequest.requested_by).where(
    TransferRequest.new_activation_id.in_(bindparam("activations", expanding=True))
)
_SEAT_ASKED = select(TransferRequest.requested_by).where(
    or_(TransferRequest.activation_id == bindparam("activation"),
        TransferRequest.new_activation_id == bindparam("activation"))
)  # fmt: skip
_SEAT_RELEASED = select(AuditEvent.actor).where(
    AuditEvent.subject == bindparam("subject"), AuditEvent.actor.like("user:%")
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: uuid.UUID
    reseller_id: str | None
    event_types: list[str]  # empty: every event


class Batch:
    """What the events of one fan-out have in common is read once for all of them: their licences in one
    query, the endpoints once, each audience's people once per event type; their seats' hostnames and
    makers in one query each, when first asked for. One transaction reads it all, so each event gets the
    answers it would have got alone."""

    def __init__(self, conn: Connection, events: Sequence[Any]) -> None:
        self.conn = conn
        self.events = events
        self.licences = licence_contexts(conn, {event.licence_id for event in events})
        self._endpoints: list[Endpoint] | None = None
        self._people: dict[tuple[Any, ...], list[str]] = {}
        self._hostnames: dict[uuid.UUID, str | None] = {}
        self._made_by: dict[uuid.UUID, set[uuid.UUID]] = {}

    def endpoints(self) -> list[Endpoint]:
        if self._endpoints is None:
            self._endpoints = [
                Endpoint(row.id, str(row.reseller_id) if row.reseller_id else None, row.event_types)
                for row in self.conn.execute(_ENDPOINTS)
            ]
        return self._endpoints

    def people(self, audience: str, event_type: str, essential: bool, **params: Any) -> list[str]:
        """The addresses of an audience's people who hear of this type of event (not opted out, not disabled)."""
        key = (audience, event_type, *params.values())
        found = self._people.get(key)
        if found is None:
            values = params if essential else params | {"event_type": event_type}
            found = [email.lower() for email in self.conn.execute(_PEOPLE[audience, essential], values).scalars()]
            self._people[key] = found
        return found

    def hostname(self, activation: uuid.UUID) -> str | None:
        """The seat's hostname, with those of the batch's other activation events that do not carry theirs."""
        if activation not in self._hostnames:
            wanted = self._seats(lambda event: event.type.startswith("activation.") and "hostname" not in event.data)
            wanted = (wanted | {activation}) - self._hostnames.keys()
            found = {seat: name for seat, name in self.conn.execute(_HOSTNAMES, {"activations": list(wanted)})}
            self._hostnames.update((seat, found.get(seat)) for seat in wanted)
        return self._hostnames[activation]

    def made_by(self, activation: uuid.UUID) -> set[uuid.UUID]:
        """Who asked for the transfer that made the seat, with the batch's other new seats' makers."""
        if activation not in self._made_by:
            wanted = self._seats(lambda event: event.type == "activation.created") | {activation}
            wanted -= self._made_by.keys()
            self._made_by.update((seat, set()) for seat in wanted)
            made: Any = self.conn.execute(_SEAT_MADE, {"activations": list(wanted)})
            for seat, user in made:
                self._made_by[seat].add(user)
        return self._made_by[activation]

    def _seats(self, which: Callable[[Any], bool]) -> set[uuid.UUID]:
        return {seat for event in self.events if which(event) and (seat := _uuid(event.data.get("activation_id")))}


def licence_contexts(conn: Connection, licence_ids: Iterable[uuid.UUID | None]) -> dict[uuid.UUID, dict[str, Any]]:
    """The licences' facts an event's data and its routing need, by licence id; unknown ones are left out."""
    wanted = [licence for licence in licence_ids if licence is not None]
    if not wanted:
        return {}
    return {row.id: _licence_context(row) for row in conn.execute(_LICENCES, {"licences": wanted})}


def _licence_context(row: Any) -> dict[str, Any]:
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


def enrich(batch: Batch, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Facts the emitting service did not have to hand (one line there), looked up once here; an event
    that already carries them costs no query."""
    if event_type.startswith("activation.") and "hostname" not in data and data.get("activation_id"):
        data = data | {"hostname": batch.hostname(uuid.UUID(data["activation_id"]))}
    return data


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def machine_users(batch: Batch, event_type: str, data: dict[str, Any]) -> set[uuid.UUID]:
    """The people whose machine an event is about, from what they did before it happened (fan-out may run
    later, and must not count what came after): whoever asked for the transfer (its decision; the seat it
    made), and for a seat that ended, whoever asked to move it or released it themselves (the audit trail)."""
    conn = batch.conn
    if event_type.startswith("transfer."):
        transfer = _uuid(data.get("transfer_id"))
        if transfer is None:
            return set()
        return set(conn.execute(_TRANSFER_ASKED, {"transfer": transfer}).scalars())
    activation = _uuid(data.get("activation_id"))
    if activation is None:
        return set()
    if event_type == "activation.created":
        return set(batch.made_by(activation))
    users = set(conn.execute(_SEAT_ASKED, {"activation": activation}).scalars())
    actors = conn.execute(_SEAT_RELEASED, {"subject": f"activation:{activation}"}).scalars()
    users |= {u for u in (_uuid(a.removeprefix("user:")) for a in actors) if u is not None}
    return users


def recipients(batch: Batch, event_type: str, licence: dict[str, Any] | None, routing: Routing,
               data: dict[str, Any] | None = None) -> list[Recipient]:  # fmt: skip
    kind = EVENTS[event_type]
    data = data or {}
    found: list[Recipient] = []
    if routing.email:
        if kind.person and (person := _uuid(data.get("user_id"))) is not None:
            for address in batch.people("person", event_type, kind.essential, user=person):
                found.append(Recipient("email", address, "person"))
        if kind.contacts and licence is not None:
            customer = uuid.UUID(licence["customer_id"])
            for address in batch.people("contact", event_type, kind.essential, customer=customer):
                found.append(Recipient("email", address, "contact"))
        if kind.owners and licence is not None and (owners := machine_users(batch, event_type, data)):
            customer = uuid.UUID(licence["customer_id"])
            for address in batch.people("owner", event_type, kind.essential, users=tuple(sorted(owners)),
                                        customer=customer):  # fmt: skip
                found.append(Recipient("email", address, "owner"))
        if kind.reseller and licence is not None and licence["reseller_id"]:
            reseller = uuid.UUID(licence["reseller_id"])
            for address in batch.people("reseller", event_type, kind.essential, reseller=reseller):
                found.append(Recipient("email", address, "reseller"))
        if kind.support and routing.support_address:
            found.append(Recipient("email", routing.support_address.lower(), "support"))
        if kind.vendor and routing.vendor_address:
            found.append(Recipient("email", routing.vendor_address.lower(), "vendor"))
    if kind.webhooks:
        # Admins' endpoints hear of every event; a reseller's only of its own customers' licences (002).
        reseller_id = licence["reseller_id"] if licence is not None else None
        for endpoint in batch.endpoints():
            if endpoint.reseller_id is not None and endpoint.reseller_id != reseller_id:
                continue
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
