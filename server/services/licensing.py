"""The vendor's catalogue and licences: products, releases, plans, customers, licences, API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from server.db.database import Database
from server.db.ids import new_id
from server.db.models import (
    Activation,
    ApiToken,
    Customer,
    Licence,
    Plan,
    Product,
    Release,
    Reseller,
    TransferRequest,
    User,
)
from server.domain import prices as price_rules
from server.domain import terms as rules
from server.domain.access import CUSTOMER_ROLES, RESELLER, ROLES
from server.domain.errors import (
    Conflict,
    CustomerDisabled,
    NotFound,
    PlanRetired,
    ProductDisabled,
    ResellerDisabled,
    Unauthorised,
    ValidationFailed,
)
from server.domain.hosts import fingerprint_salt, key_hash
from server.notify import outbox
from server.services import audit, changes, prices
from server.services.access import OPERATOR, Principal, customer_in_scope, licence_in_scope, plan_values
from server.services.listing import Page, Slice, cut, keyset
from server.services.moves import quota_report
from server.services.requests import PRODUCT_CODE, has_control_characters
from server.services.terms import add_term, business_calendar, first_term_end, load_terms, write_ledger

__all__ = ["ROLES", "LicensingService", "Principal"]
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


def add_product(conn: Connection, code: str, name: str, now: datetime, actor: str = OPERATOR.actor) -> dict[str, Any]:
    if not PRODUCT_CODE.fullmatch(code):
        # What the agent API accepts as a product: a code it refuses could never be activated.
        raise ValidationFailed("a product code is 1 to 64 lower-case letters, digits, dots, dashes or underscores")
    if has_control_characters(name):
        raise ValidationFailed("a product name cannot hold control characters")
    product_id = new_id()
    _insert_unique(
        conn, Product, {"id": product_id, "code": code, "name": name, "created_at": now}, f"product {code!r}"
    )
    _vendor_event(conn, "product.add", f"product:{product_id}", {"code": code}, now, actor)
    return {"id": str(product_id), "code": code, "name": name}


def _vendor_event(
    conn: Connection, action: str, subject: str, details: dict[str, Any], now: datetime, actor: str
) -> None:
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=actor, action=action, subject=subject,
                 details=details, now=now)  # fmt: skip


def add_release(
    conn: Connection,
    product: str,
    version: str,
    released: date,
    end_of_support: date | None,
    now: datetime,
    actor: str = OPERATOR.actor,
) -> dict[str, Any]:
    product_row = _one(conn, Product, Product.code, product, "product")
    if end_of_support is not None and end_of_support < released:
        raise ValidationFailed("end of support cannot come before the release date")
    release_id = new_id()
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
    _vendor_event(conn, "release.add", f"release:{release_id}", {"product": product, "version": version}, now, actor)
    return {"id": str(release_id), "product": product, "version": version, "released": released.isoformat()}


PLAN_FIELDS = (
    "kind", "model", "lease_days", "tolerance", "grace_days", "term_months", "allow_virtual",
    "deactivations_per_term", "free_host_changes_per_term", "price_cents", "currency", "notice_months",
    "features", "dongle_usb_ids", "renewal_rule", "reinstatement_rule", "renewal_price_cents",
    "host_change_price_cents", "dongle_replacement_price_cents", "processing_days", "price_per",
    "min_identifying", "rebinds_per_term", "maintenance_mandatory", "back_fee_cap_months", "offline_lease_to_term",
)  # fmt: skip


def add_plan(
    conn: Connection, name: str, fields: dict[str, Any], now: datetime, actor: str = OPERATOR.actor
) -> dict[str, Any]:
    unknown = set(fields) - set(PLAN_FIELDS)
    if unknown:
        raise ValidationFailed(f"unknown plan fields: {', '.join(sorted(unknown))}")
    if fields.get("kind") not in ("perpetual", "subscription"):
        raise ValidationFailed("kind must be perpetual or subscription")
    if fields.get("model") not in ("activation", "host-id", "dongle"):
        raise ValidationFailed("model must be activation, host-id or dongle")
    for numeric in ("lease_days", "term_months", "min_identifying"):
        if numeric in fields and fields[numeric] < 1:
            raise ValidationFailed(f"{numeric} must be at least 1")
    # Prices, notice, grace and processing days are checked against each other by rules.check_plan.
    for numeric in (
        "tolerance",
        "grace_days",
        "free_host_changes_per_term",
        "deactivations_per_term",
        "rebinds_per_term",
    ):
        if fields.get(numeric) is not None and fields[numeric] < 0:
            raise ValidationFailed(f"{numeric} cannot be negative")
    if not isinstance(fields.get("maintenance_mandatory", False), bool):
        raise ValidationFailed("maintenance_mandatory is true or false")
    if fields.get("renewal_rule", rules.YEARLY) not in rules.RENEWAL_RULES:
        raise ValidationFailed(f"renewal_rule must be one of {', '.join(rules.RENEWAL_RULES)}")
    fields = {k: v for k, v in fields.items() if not (k == "reinstatement_rule" and v is None)}
    fields.setdefault("reinstatement_rule", rules.default_reinstatement_rule(fields["kind"]))
    if fields["reinstatement_rule"] not in rules.REINSTATEMENT_RULES:
        raise ValidationFailed(f"reinstatement_rule must be one of {', '.join(rules.REINSTATEMENT_RULES)}")
    if fields.get("price_per", price_rules.PER_PACKAGE) not in price_rules.PRICE_BASES:
        raise ValidationFailed(f"price_per must be one of {', '.join(price_rules.PRICE_BASES)}")
    rules.check_plan(fields)
    plan_id = new_id()
    values = {"features": [], "dongle_usb_ids": []} | fields
    _insert_unique(conn, Plan, {"id": plan_id, "name": name, "created_at": now, **values}, f"plan {name!r}")
    _vendor_event(conn, "plan.add", f"plan:{plan_id}", {"name": name, **values}, now, actor)
    return {"id": str(plan_id), "name": name, **values}


def add_reseller(conn: Connection, name: str, now: datetime, actor: str = OPERATOR.actor) -> dict[str, Any]:
    reseller_id = new_id()
    _insert_unique(conn, Reseller, {"id": reseller_id, "name": name, "created_at": now}, f"reseller {name!r}")
    _vendor_event(conn, "reseller.add", f"reseller:{reseller_id}", {"name": name}, now, actor)
    return {"id": str(reseller_id), "name": name}


def add_customer(
    conn: Connection, name: str, reseller: str | None, now: datetime, actor: str = OPERATOR.actor
) -> dict[str, Any]:
    reseller_id = _one(conn, Reseller, Reseller.name, reseller, "reseller").id if reseller else None
    customer_id = new_id()
    _insert_unique(
        conn,
        Customer,
        {"id": customer_id, "name": name, "reseller_id": reseller_id, "created_at": now},
        f"customer {name!r}",
    )
    _vendor_event(conn, "customer.add", f"customer:{customer_id}", {"name": name, "reseller": reseller}, now, actor)
    return {"id": str(customer_id), "name": name, "reseller": reseller}


def issue_licence(
    conn: Connection,
    who: Principal,
    customer: str,
    product: str,
    plan: str,
    seats: int,
    now: datetime,
    features: list[str] | None = None,
) -> IssuedLicence:
    """A new licence; its key is shown once. A reseller issues only for its own customers (002). `features`:
    the licence's own modules (001: "via parameters"); None gives it the plan's defaults."""
    who.may("licence:issue")
    if isinstance(seats, bool) or not 1 <= seats <= 1_000_000:
        raise ValidationFailed("seats must be between 1 and 1,000,000")
    modules = changes.check_features(features, "features") if features is not None else None
    customer_row = customer_in_scope(conn, who, customer)
    product_row = _one(conn, Product, Product.code, product, "product")
    plan_row = _one(conn, Plan, Plan.name, plan, "plan")
    if plan_row.retired_at is not None:
        raise PlanRetired(f"plan {plan!r} is retired: it takes no new licences")
    _refuse_disabled(conn, product_row, customer_row)
    key = new_licence_key()
    licence_id = new_id()
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
            features=modules,
            created_at=now,
        )
    )
    # Perpetual: the first maintenance year comes with the purchase and renews after it (000, 003).
    # Subscription: the paid term is both the right of use and its maintenance (000).
    term_end = first_term_end(now, plan_row.term_months)
    origin = "included" if plan_row.kind == "perpetual" else "subscription"
    add_term(conn, licence_id, now, term_end, origin, auto=True)
    licence = conn.execute(select(Licence.__table__).where(Licence.id == licence_id)).one()
    # One definition of each price (server.domain.prices): a perpetual licence's price, or a subscription's
    # first term at its yearly fee pro rata; per package or per seat; the price list in force today.
    in_force = prices.in_force(conn, plan_row, business_calendar().day_of(now))
    charge = price_rules.licence_charge(in_force, kind=plan_row.kind, term_months=plan_row.term_months,
                                        per=plan_row.price_per, seats=seats)  # fmt: skip
    entry = write_ledger(
        conn, licence, kind="licence", amount_cents=charge, currency=plan_row.currency,
        actor=who.actor, now=now, period=(now, term_end), note=f"{seats} seat(s) of {product}",
    )  # fmt: skip
    audit.record(conn, chain=audit.licence_chain(licence_id), actor=who.actor, action="licence.issue",
                 subject=f"licence:{licence_id}", details={"customer": str(customer_row.id), "product": product,
                 "plan": plan, "seats": seats, "ledger": entry["id"]}, now=now)  # fmt: skip
    outbox.emit(conn, "licence.issued", licence_id, {"plan": plan, "seats": seats, "ledger": entry["id"]}, now)
    return IssuedLicence(str(licence_id), key, product, plan, seats, customer_row.name, term_end.isoformat())


def _refuse_disabled(conn: Connection, product: Any, customer: Any) -> None:
    """A disabled product, customer or reseller takes no new licence; the licences it has run on."""
    if product.disabled_at is not None:
        raise ProductDisabled(f"product {product.code!r} is disabled: it takes no new licences")
    if customer.disabled_at is not None:
        raise CustomerDisabled(f"customer {customer.name!r} is disabled: it takes no new licences")
    if customer.reseller_id is not None:
        reseller = conn.execute(
            select(Reseller.name, Reseller.disabled_at).where(Reseller.id == customer.reseller_id)
        ).one()
        if reseller.disabled_at is not None:
            raise ResellerDisabled(f"reseller {reseller.name!r} is disabled: it sells no new licences")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def show_licence(conn: Connection, who: Principal, licence_id: str, now: datetime) -> dict[str, Any]:
    """Everything about one licence its viewer may see: seats, activations, terms, quotas left."""
    who.may("licence:read")
    licence = licence_in_scope(conn, who, licence_id)
    plan = plan_values(conn, licence.plan_id)
    terms = load_terms(conn, licence.id)
    current = rules.current_term(terms, now)
    latest = rules.latest_term(terms)
    activations = conn.execute(
        select(Activation.__table__).where(Activation.licence_id == licence.id).order_by(Activation.created_at)
    )
    pending = conn.execute(
        select(func.count()).where(TransferRequest.licence_id == licence.id, TransferRequest.state == "pending")
    ).scalar_one()
    return {
        "id": str(licence.id),
        "customer": licence.customer,
        "customer_id": str(licence.customer_id),
        "product": licence.product,
        "plan": licence.plan,
        "kind": plan.kind,
        "model": plan.model,
        "status": licence.status,
        "seats": licence.seats,
        "seats_in_use": licence.seats_in_use,
        "features": changes.licence_features(licence, plan),
        "ends_at": _iso(licence.ends_at),
        "key_hint": "…" + licence.key_hint,
        "maintenance": {
            "state": "current" if current else ("lapsed" if rules.is_lapsed(terms, now) else "future"),
            "until": _iso(rules.maintenance_until(terms)),
            "auto_renew": bool(latest and latest.auto_renew and latest.cancelled_at is None),
            "cancelled_at": _iso(latest.cancelled_at) if latest else None,
        },
        "terms": [
            {
                "start": t.start.isoformat(),
                "end": t.end.isoformat(),
                "origin": t.origin,
                "auto_renew": t.auto_renew,
                "cancelled_at": _iso(t.cancelled_at),
                "cancellation_received_on": t.received_on.isoformat() if t.received_on else None,
            }
            for t in terms
        ],
        "quotas": quota_report(conn, licence, plan, now),
        "pending_transfers": int(pending),
        "activations": [
            {
                "id": str(a.id),
                "hostname": a.hostname,
                "label": a.label,
                "dongle_serial": a.dongle_serial,
                "created_at": a.created_at.isoformat(),
                "last_seen": a.refreshed_at.isoformat(),
                "ended_at": _iso(a.ended_at),
                "end_reason": a.end_reason,
            }
            for a in activations
        ],
    }


def _licences_statement(who: Principal) -> Select[Any]:
    who.may("licence:read")
    statement = (
        select(Licence.id, Licence.seats, Licence.seats_in_use, Licence.status, Licence.created_at, Product.code,
               Customer.name, Customer.id.label("customer_id"))
        .join(Product, Product.id == Licence.product_id)
        .join(Customer, Customer.id == Licence.customer_id)
        .order_by(Customer.name, Licence.created_at)
    )  # fmt: skip
    if who.role == RESELLER:
        statement = statement.where(Customer.reseller_id == who.owner_id)
    elif who.role in CUSTOMER_ROLES:
        statement = statement.where(Customer.id == who.owner_id)
    return statement


def _licence_item(r: Any) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "customer": r.name,
        "customer_id": str(r.customer_id),
        "product": r.code,
        "seats": r.seats,
        "seats_in_use": r.seats_in_use,
        "status": r.status,
        "created_at": r.created_at.isoformat(),
    }


def list_licences(conn: Connection, who: Principal) -> list[dict[str, Any]]:
    """Every licence the caller may see, by customer (the portal's and the CLI's view)."""
    return [_licence_item(r) for r in conn.execute(_licences_statement(who))]


def licences_page(conn: Connection, who: Principal, page: Page) -> Slice:
    """One page of the same, oldest first by (created_at, id)."""
    rows = conn.execute(keyset(_licences_statement(who), (Licence.created_at, Licence.id), page)).all()
    return cut(rows, page, lambda r: (r.created_at, r.id), _licence_item)


def set_licence_status(conn: Connection, who: Principal, licence_id: str, status: str, now: datetime) -> dict[str, Any]:
    who.may("licence:status")
    if status not in ("active", "suspended", "revoked"):
        raise ValidationFailed("status must be active, suspended or revoked")
    licence = licence_in_scope(conn, who, licence_id, lock=True)
    if licence.status == "revoked" and status != "revoked":
        raise Conflict("a revoked licence stays revoked: issue a new one")
    conn.execute(update(Licence).where(Licence.id == licence.id).values(status=status))
    audit.record(conn, chain=audit.licence_chain(licence.id), actor=who.actor, action=f"licence.{status}",
                 subject=f"licence:{licence.id}", details={"from": licence.status}, now=now)  # fmt: skip
    outbox.emit(conn, "licence.changed", licence.id, {"status": status, "from": licence.status}, now)
    return {"id": str(licence.id), "status": status}


def create_token_row(
    conn: Connection,
    role: str,
    owner_id: uuid.UUID | None,
    label: str,
    now: datetime,
    user_id: uuid.UUID | None,
    *,
    actor: str,
) -> dict[str, Any]:
    """A new API token (shown once), audited as made by `actor`: the operator's CLI, or the API caller who
    added the user it belongs to."""
    token = "tsk_" + secrets.token_urlsafe(32)
    token_id = new_id()
    conn.execute(
        insert(ApiToken).values(
            id=token_id, token_hash=token_hash(token), role=role, owner_id=owner_id, label=label, created_at=now,
            user_id=user_id,
        )
    )  # fmt: skip
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=actor, action="token.create",
                 subject=f"token:{token_id}", details={"role": role, "label": label}, now=now)  # fmt: skip
    return {"id": str(token_id), "token": token, "role": role}


def create_api_token(
    conn: Connection, role: str, owner: str | None, label: str, now: datetime, user: str | None = None
) -> dict[str, Any]:
    """The operator's `tessera-admin token create`: a token for a role, its owner and, for people, its user."""
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}")
    owner_id: uuid.UUID | None = None
    if role == RESELLER:
        owner_id = _one(conn, Reseller, Reseller.name, owner, "reseller").id if owner else None
    elif role in CUSTOMER_ROLES:
        owner_id = _one(conn, Customer, Customer.name, owner, "customer").id if owner else None
    if role in (RESELLER, *CUSTOMER_ROLES) and owner_id is None:
        raise ValidationFailed(f"a {role} token needs --owner (the {role.split('-')[0]}'s name)")
    user_id = None
    if user is not None:
        person = conn.execute(select(User.__table__).where(User.email == user.lower())).first()
        if person is None or person.role != role or (owner_id is not None and person.customer_id != owner_id):
            raise NotFound(f"no {role} user {user!r} at {owner!r}")
        user_id = person.id
    return create_token_row(conn, role, owner_id, label, now, user_id, actor=OPERATOR.actor) | {"owner": owner}


def authenticate(conn: Connection, token: str) -> Principal:
    digest = token_hash(token)
    row = conn.execute(_TOKEN_BY_HASH, {"digest": digest}).first()
    # The lookup is by hash; the comparison is constant-time all the same.
    if row is None or not hmac.compare_digest(row.token_hash, digest) or row.user_disabled is not None:
        raise Unauthorised("unknown or revoked API token")
    return Principal(role=row.role, owner_id=row.owner_id, token_id=row.id, user_id=row.user_id)


_TOKEN_BY_HASH = (
    select(
        ApiToken.id,
        ApiToken.role,
        ApiToken.owner_id,
        ApiToken.token_hash,
        ApiToken.user_id,
        User.disabled_at.label("user_disabled"),
    )
    .outerjoin(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("digest"), ApiToken.revoked_at.is_(None))
)


class LicensingService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def authenticate(self, token: str) -> Principal:
        return await self.db.run(authenticate, token)
