"""The vendor's catalogue and licences: products, releases, plans, customers, licences, API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from server.db.database import Database
from server.db.models import (
    Activation,
    ApiToken,
    Customer,
    Licence,
    MaintenanceTerm,
    Plan,
    Product,
    Release,
    Reseller,
)
from server.domain.calendar import add_months
from server.domain.errors import Conflict, NotFound, Unauthorised, ValidationFailed
from server.domain.hosts import fingerprint_salt, key_hash

ROLES = ("admin", "support", "reseller", "customer-admin", "customer-user")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_licence_key() -> str:
    """TSR- and five groups of five Crockford base32 characters: 125 random bits."""
    chars = "".join(secrets.choice(_CROCKFORD) for _ in range(25))
    return "TSR-" + "-".join(chars[i : i + 5] for i in range(0, 25, 5))


def token_hash(token: str) -> str:
    return hashlib.sha256(b"tessera-api-token\x00" + token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedLicence:
    id: str
    key: str
    product: str
    plan: str
    seats: int
    customer: str
    term_end: str


@dataclass(frozen=True)
class Principal:
    token_id: uuid.UUID
    role: str
    owner_id: uuid.UUID | None


def _one(conn: Connection, model: Any, column: Any, value: Any, what: str) -> Any:
    row = conn.execute(select(model.__table__).where(column == value)).first()
    if row is None:
        raise NotFound(f"no {what} {value!r}")
    return row


def _insert_unique(conn: Connection, model: Any, values: dict[str, Any], what: str) -> None:
    try:
        with conn.begin_nested():
            conn.execute(insert(model).values(**values))
    except IntegrityError as exc:
        raise Conflict(f"{what} already exists") from exc


def add_product(conn: Connection, code: str, name: str, now: datetime) -> dict[str, Any]:
    product_id = uuid.uuid4()
    _insert_unique(
        conn, Product, {"id": product_id, "code": code, "name": name, "created_at": now}, f"product {code!r}"
    )
    return {"id": str(product_id), "code": code, "name": name}


def add_release(
    conn: Connection, product: str, version: str, released: date, end_of_support: date | None
) -> dict[str, Any]:
    product_row = _one(conn, Product, Product.code, product, "product")
    if end_of_support is not None and end_of_support < released:
        raise ValidationFailed("end of support cannot come before the release date")
    release_id = uuid.uuid4()
    _insert_unique(
        conn,
        Release,
        {
            "id": release_id,
            "product_id": product_row.id,
            "version": version,
            "released_on": released,
            "end_of_support": end_of_support,
        },
        f"release {product} {version}",
    )
    return {"id": str(release_id), "product": product, "version": version, "released": released.isoformat()}


PLAN_FIELDS = (
    "kind", "model", "lease_days", "tolerance", "grace_days", "term_months", "allow_virtual",
    "deactivations_per_term", "free_host_changes_per_term", "price_cents", "currency", "notice_months",
    "features", "dongle_usb_ids",
)  # fmt: skip


def add_plan(conn: Connection, name: str, fields: dict[str, Any], now: datetime) -> dict[str, Any]:
    unknown = set(fields) - set(PLAN_FIELDS)
    if unknown:
        raise ValidationFailed(f"unknown plan fields: {', '.join(sorted(unknown))}")
    if fields.get("kind") not in ("perpetual", "subscription"):
        raise ValidationFailed("kind must be perpetual or subscription")
    if fields.get("model") not in ("activation", "host-id", "dongle"):
        raise ValidationFailed("model must be activation, host-id or dongle")
    for numeric in ("lease_days", "term_months"):
        if numeric in fields and fields[numeric] < 1:
            raise ValidationFailed(f"{numeric} must be at least 1")
    for numeric in ("tolerance", "grace_days", "price_cents", "notice_months", "free_host_changes_per_term"):
        if numeric in fields and fields[numeric] < 0:
            raise ValidationFailed(f"{numeric} cannot be negative")
    plan_id = uuid.uuid4()
    values = {"features": [], "dongle_usb_ids": []} | fields
    _insert_unique(conn, Plan, {"id": plan_id, "name": name, "created_at": now, **values}, f"plan {name!r}")
    return {"id": str(plan_id), "name": name, **values}


def add_reseller(conn: Connection, name: str, now: datetime) -> dict[str, Any]:
    reseller_id = uuid.uuid4()
    _insert_unique(conn, Reseller, {"id": reseller_id, "name": name, "created_at": now}, f"reseller {name!r}")
    return {"id": str(reseller_id), "name": name}


def add_customer(conn: Connection, name: str, reseller: str | None, now: datetime) -> dict[str, Any]:
    reseller_id = _one(conn, Reseller, Reseller.name, reseller, "reseller").id if reseller else None
    customer_id = uuid.uuid4()
    _insert_unique(
        conn,
        Customer,
        {"id": customer_id, "name": name, "reseller_id": reseller_id, "created_at": now},
        f"customer {name!r}",
    )
    return {"id": str(customer_id), "name": name, "reseller": reseller}


def issue_licence(conn: Connection, customer: str, product: str, plan: str, seats: int, now: datetime) -> IssuedLicence:
    if seats < 1 or seats > 1_000_000:
        raise ValidationFailed("seats must be between 1 and 1,000,000")
    customer_row = _one(conn, Customer, Customer.name, customer, "customer")
    product_row = _one(conn, Product, Product.code, product, "product")
    plan_row = _one(conn, Plan, Plan.name, plan, "plan")
    key = new_licence_key()
    licence_id = uuid.uuid4()
    conn.execute(
        insert(Licence).values(
            id=licence_id,
            customer_id=customer_row.id,
            product_id=product_row.id,
            plan_id=plan_row.id,
            key_hash=key_hash(key),
            key_hint=key[-5:],
            fingerprint_salt=fingerprint_salt(key),
            seats=seats,
            seats_in_use=0,
            status="active",
            created_at=now,
        )
    )
    # Perpetual: the first maintenance year comes with the purchase (000, 003).
    # Subscription: the paid term is both the right of use and its maintenance (000).
    term_end = add_months(now, plan_row.term_months)
    conn.execute(
        insert(MaintenanceTerm).values(
            id=uuid.uuid4(),
            licence_id=licence_id,
            starts_at=now,
            ends_at=term_end,
            origin="included" if plan_row.kind == "perpetual" else "subscription",
            auto_renew=plan_row.kind == "subscription",
        )
    )
    return IssuedLicence(str(licence_id), key, product, plan, seats, customer, term_end.isoformat())


def _licence_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound(f"no licence {text!r}") from None


def show_licence(conn: Connection, licence_id: str) -> dict[str, Any]:
    lid = _licence_id(licence_id)
    row = conn.execute(
        select(
            Licence.__table__,
            Plan.name.label("plan"),
            Product.code.label("product"),
            Customer.name.label("customer"),
        )
        .join(Plan, Plan.id == Licence.plan_id)
        .join(Product, Product.id == Licence.product_id)
        .join(Customer, Customer.id == Licence.customer_id)
        .where(Licence.id == lid)
    ).first()
    if row is None:
        raise NotFound(f"no licence {licence_id!r}")
    licence = row
    terms = conn.execute(
        select(MaintenanceTerm.__table__).where(MaintenanceTerm.licence_id == lid).order_by(MaintenanceTerm.starts_at)
    )
    activations = conn.execute(
        select(Activation.__table__).where(Activation.licence_id == lid).order_by(Activation.created_at)
    )
    return {
        "id": str(licence.id),
        "customer": row.customer,
        "product": row.product,
        "plan": row.plan,
        "status": licence.status,
        "seats": licence.seats,
        "seats_in_use": licence.seats_in_use,
        "key_hint": "…" + licence.key_hint,
        "terms": [{"start": t.starts_at.isoformat(), "end": t.ends_at.isoformat(), "origin": t.origin} for t in terms],
        "activations": [
            {
                "id": str(a.id),
                "hostname": a.hostname,
                "created_at": a.created_at.isoformat(),
                "last_refresh": a.refreshed_at.isoformat(),
                "ended_at": a.ended_at.isoformat() if a.ended_at else None,
                "end_reason": a.end_reason,
            }
            for a in activations
        ],
    }


def list_licences(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(Licence.id, Licence.seats, Licence.seats_in_use, Licence.status, Product.code, Customer.name)
        .join(Product, Product.id == Licence.product_id)
        .join(Customer, Customer.id == Licence.customer_id)
        .order_by(Customer.name, Licence.created_at)
    )
    return [
        {
            "id": str(r.id),
            "customer": r.name,
            "product": r.code,
            "seats": r.seats,
            "seats_in_use": r.seats_in_use,
            "status": r.status,
        }
        for r in rows
    ]


def set_licence_status(conn: Connection, licence_id: str, status: str) -> dict[str, Any]:
    if status not in ("active", "suspended", "revoked"):
        raise ValidationFailed("status must be active, suspended or revoked")
    lid = _licence_id(licence_id)
    current = conn.execute(select(Licence.status).where(Licence.id == lid)).scalar_one_or_none()
    if current is None:
        raise NotFound(f"no licence {licence_id!r}")
    if current == "revoked" and status != "revoked":
        raise Conflict("a revoked licence stays revoked: issue a new one")
    conn.execute(update(Licence).where(Licence.id == lid).values(status=status))
    return {"id": licence_id, "status": status}


def create_api_token(conn: Connection, role: str, owner: str | None, label: str, now: datetime) -> dict[str, Any]:
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}")
    owner_id: uuid.UUID | None = None
    if role == "reseller":
        owner_id = _one(conn, Reseller, Reseller.name, owner, "reseller").id if owner else None
    elif role.startswith("customer"):
        owner_id = _one(conn, Customer, Customer.name, owner, "customer").id if owner else None
    if role in ("reseller", "customer-admin", "customer-user") and owner_id is None:
        raise ValidationFailed(f"a {role} token needs --owner (the {role.split('-')[0]}'s name)")
    token = "tsk_" + secrets.token_urlsafe(32)
    token_id = uuid.uuid4()
    conn.execute(
        insert(ApiToken).values(
            id=token_id, token_hash=token_hash(token), role=role, owner_id=owner_id, label=label, created_at=now
        )
    )
    return {"id": str(token_id), "token": token, "role": role, "owner": owner}


def authenticate(conn: Connection, token: str) -> Principal:
    digest = token_hash(token)
    row = conn.execute(
        select(ApiToken.id, ApiToken.role, ApiToken.owner_id, ApiToken.token_hash).where(
            ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None)
        )
    ).first()
    # The lookup is by hash; the comparison is constant-time all the same.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise Unauthorised("unknown or revoked API token")
    return Principal(row.id, row.role, row.owner_id)


class LicensingService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def authenticate(self, token: str) -> Principal:
        return await self.db.run(authenticate, token)

    async def show_licence(self, licence_id: str) -> dict[str, Any]:
        return await self.db.run(show_licence, licence_id)

    async def list_licences(self) -> list[dict[str, Any]]:
        return await self.db.run(list_licences)
