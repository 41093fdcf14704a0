"""A world for fanning events out without a server: resellers, customers, licences, people, endpoints, seats.

Written straight into the tables, so the fan-out's test and its measurement (fanout_cost.py) share it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert

from server.db.ids import new_id
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

T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "whsec_" + "A" * 43


@dataclass
class World:
    resellers: list[uuid.UUID] = field(default_factory=list)
    customers: list[uuid.UUID] = field(default_factory=list)  # customers[i] buys from resellers[i % 3], 2: none
    licences: list[uuid.UUID] = field(default_factory=list)  # licences[i] is customers[i % len(customers)]'s
    users: dict[str, uuid.UUID] = field(default_factory=dict)  # by e-mail
    endpoints: dict[str, uuid.UUID] = field(default_factory=dict)  # by name
    seats: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)  # (licence, activation)


def _user(conn: Connection, world: World, email: str, role: str, *, customer: uuid.UUID | None = None,
          reseller: uuid.UUID | None = None, contact: str | None = None, disabled: bool = False,
          ) -> uuid.UUID:  # fmt: skip
    user = new_id()
    conn.execute(insert(User).values(id=user, customer_id=customer, reseller_id=reseller, name=email, email=email,
                                     role=role, contact=contact, created_at=T0,
                                     disabled_at=T0 if disabled else None))  # fmt: skip
    world.users[email] = user
    return user


def _endpoint(conn: Connection, world: World, name: str, *, reseller: uuid.UUID | None = None,
              events: list[str] | None = None, removed: bool = False) -> None:  # fmt: skip
    endpoint = new_id()
    conn.execute(insert(WebhookEndpoint).values(
        id=endpoint, url=f"http://127.0.0.1:9/{name}", reseller_id=reseller, event_types=events or [],
        description=name, secret=SECRET, created_by="t", created_at=T0 + timedelta(seconds=len(world.endpoints)),
        removed_at=T0 if removed else None,
    ))  # fmt: skip
    world.endpoints[name] = endpoint


def build(conn: Connection, *, customers: int = 5, licences: int = 8, seats: int = 24) -> World:
    """Three resellers' worth of customers (the third kind has no reseller), each with two contacts and a
    user; reseller people and endpoints, admin endpoints (one for every event, one filtered, one removed);
    opt-outs of one kind and of all, a disabled contact, and seats on every licence."""
    world = World()
    for r in range(2):
        reseller = new_id()
        conn.execute(insert(Reseller).values(id=reseller, name=f"Reseller {r}", created_at=T0))
        world.resellers.append(reseller)
        _user(conn, world, f"sales{r}@reseller{r}.test", "reseller", reseller=reseller)
        _user(conn, world, f"quiet{r}@reseller{r}.test", "reseller", reseller=reseller)
    product, plan = new_id(), new_id()
    conn.execute(insert(Product).values(id=product, code="cad-pro", name="CAD Pro", created_at=T0))
    conn.execute(insert(Plan).values(id=plan, name="standard", kind="perpetual", model="activation", created_at=T0))
    for c in range(customers):
        customer = new_id()
        seller = world.resellers[c % 3] if c % 3 < 2 else None
        conn.execute(insert(Customer).values(id=customer, name=f"Customer {c}", reseller_id=seller, created_at=T0))
        world.customers.append(customer)
        _user(conn, world, f"Admin{c}@customer{c}.test", "customer-admin", customer=customer,
              contact="system-administrator")  # fmt: skip
        _user(conn, world, f"deputy{c}@customer{c}.test", "customer-user", customer=customer, contact="deputy",
              disabled=c == 1)  # fmt: skip
        _user(conn, world, f"user{c}@customer{c}.test", "customer-user", customer=customer)
    for n in range(licences):
        licence = new_id()
        conn.execute(insert(Licence).values(
            id=licence, customer_id=world.customers[n % customers], product_id=product, plan_id=plan,
            key_hash=f"{n:064x}", key_hint=f"{n:08x}", fingerprint_salt="s", seats=seats, created_at=T0,
        ))  # fmt: skip
        if n % 2 == 0:
            ends = T0 + timedelta(days=365 + n)
            conn.execute(insert(MaintenanceTerm).values(id=new_id(), licence_id=licence, starts_at=T0, ends_at=ends,
                                                        origin="included"))  # fmt: skip
        world.licences.append(licence)
    for s in range(seats):
        licence, activation = world.licences[s % licences], new_id()
        conn.execute(insert(Activation).values(
            id=activation, licence_id=licence, host_components=[["mac", f"{s:012x}"]], host_match=1,
            agent_key=f"key{s}", hostname=f"host-{s}.example", created_at=T0, refreshed_at=T0,
        ))  # fmt: skip
        world.seats.append((licence, activation))
    opt_outs = [("deputy0@customer0.test", "activation.created"), ("Admin2@customer2.test", "*"),
                ("quiet0@reseller0.test", "licence.issued"), ("quiet1@reseller1.test", "*")]  # fmt: skip
    for email, kind in opt_outs:
        conn.execute(insert(NotificationOptOut).values(user_id=world.users[email], event_type=kind, created_at=T0))
    _endpoint(conn, world, "admin-all")
    _endpoint(conn, world, "admin-activations", events=["activation.created", "activation.ended"])
    _endpoint(conn, world, "admin-removed", removed=True)
    _endpoint(conn, world, "reseller0-all", reseller=world.resellers[0])
    _endpoint(conn, world, "reseller1-issued", reseller=world.resellers[1], events=["licence.issued"])
    return world


def transfer(conn: Connection, world: World, seat: int, by: str, *, new_seat: int | None = None) -> uuid.UUID:
    """A transfer of a seat asked for by a person; with `new_seat`, approved and that seat made by it."""
    licence, activation = world.seats[seat]
    request = new_id()
    conn.execute(insert(TransferRequest).values(
        id=request, licence_id=licence, activation_id=activation, reason="hardware-change",
        state="pending" if new_seat is None else "approved", requested_by=world.users[by], requested_at=T0,
        new_activation_id=None if new_seat is None else world.seats[new_seat][1],
    ))  # fmt: skip
    return request


def released(conn: Connection, world: World, seat: int, by: str, seq: int) -> None:
    """The audit trail's word that a person released a seat themselves."""
    actor = f"user:{world.users[by]}" if "@" in by else by
    conn.execute(insert(AuditEvent).values(chain="test", seq=seq, at=T0, actor=actor, action="activation.release",
                                           subject=f"activation:{world.seats[seat][1]}", details={},
                                           hash="0" * 64))  # fmt: skip


def activation_data(world: World, seat: int, *, hostname: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"activation_id": str(world.seats[seat][1])}
    if hostname:
        data["hostname"] = f"as-emitted-{seat}.example"
    return data
