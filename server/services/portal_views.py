"""What the portal's pages show that no API unit answers in one call: overviews, previews, searches,
the vendor's catalogue and its API tokens. Each unit takes the caller's Principal and applies the same
roles (server.domain.access) and tenancy (server.services.access) as the API; changes go through the
existing units (moves, transfers, terms, licensing, people)."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, func, or_, select, update

from server.db.models import (
    Activation,
    ApiToken,
    AuditEvent,
    Customer,
    Licence,
    Plan,
    PortalAccount,
    Product,
    Release,
    Reseller,
    User,
)
from server.domain import terms as rules
from server.domain.access import ADMIN, CUSTOMER_ROLES, RESELLER
from server.domain.calendar import add_months
from server.domain.errors import (
    CancellationNotPossible,
    Conflict,
    LicenceNotFound,
    NotFound,
    RoleForbidden,
    ValidationFailed,
)
from server.domain.hosts import key_hash
from server.services import accounts, audit, changes, licensing, portal_sessions, transfers
from server.services.access import Principal, customer_in_scope, licence_in_scope, parse_id, plan_values
from server.services.terms import load_terms, policy


def _admin_only(who: Principal, action: str) -> None:
    if who.role != ADMIN:
        raise RoleForbidden(f"the {who.role} role may not do {action}", action=action, role=who.role)


def _scoped(statement: Any, who: Principal) -> Any:
    if who.role == RESELLER:
        return statement.where(Customer.reseller_id == who.owner_id)
    if who.role in CUSTOMER_ROLES:
        return statement.where(Customer.id == who.owner_id)
    return statement


def _deadline(terms: list[rules.Term], plan: Any) -> datetime | None:
    latest = rules.latest_term(terms)
    if latest is None or not latest.auto_renew or latest.cancelled_at is not None:
        return None
    return add_months(latest.end, -rules.notice_months(policy(plan)))


def licence_overview(conn: Connection, who: Principal, now: datetime) -> list[dict[str, Any]]:
    """Every licence the caller sees, with its maintenance, next renewal, cancellation deadline and seats."""
    overview = []
    for item in licensing.list_licences(conn, who):
        detail = licensing.show_licence(conn, who, item["id"], now)
        licence = licence_in_scope(conn, who, item["id"])
        terms = load_terms(conn, licence.id)
        deadline = _deadline(terms, plan_values(conn, licence.plan_id))
        detail["cancellation_deadline"] = deadline.isoformat() if deadline else None
        detail["next_renewal"] = detail["maintenance"]["until"] if detail["maintenance"]["auto_renew"] else None
        overview.append(detail)
    return overview


def machines(conn: Connection, who: Principal, now: datetime) -> list[dict[str, Any]]:
    """One inventory of seats across the caller's licences, live ones first."""
    rows = []
    for licence in licence_overview(conn, who, now):
        for seat in licence["activations"]:
            rows.append(seat | {"licence_id": licence["id"], "product": licence["product"],
                                "model": licence["model"], "customer": licence["customer"],
                                "deactivations_left": licence["quotas"]["deactivations"]["left"]})  # fmt: skip
    rows.sort(key=lambda r: (r["ended_at"] is not None, r["hostname"]))
    return rows


def cancellation_preview(conn: Connection, who: Principal, licence_id: str, now: datetime) -> dict[str, Any]:
    """What cancelling auto-renewal now would do, before anyone confirms it (rule 1)."""
    who.may("licence:cancel")
    licence = licence_in_scope(conn, who, licence_id)
    plan = plan_values(conn, licence.plan_id)
    terms = load_terms(conn, licence.id)
    base = {"licence_id": str(licence.id), "product": licence.product, "customer": licence.customer}
    try:
        outcome = rules.cancel(terms, policy(plan), now)
    except CancellationNotPossible as exc:
        return base | {"possible": False, "detail": exc.detail}
    deadline = _deadline(terms, plan)
    return base | {
        "possible": True,
        "in_time": outcome.in_time,
        "effective": outcome.effective.isoformat(),
        "deadline": deadline.isoformat() if deadline else None,
    }


def transfer_queue(conn: Connection, who: Principal, state: str | None, now: datetime) -> list[dict[str, Any]]:
    """Transfer requests with their seat, customer and, while pending, what approving would cost (rule 5)."""
    rows = []
    for item in transfers.list_transfers(conn, who, state, now):
        licence = licence_in_scope(conn, who, item["licence_id"])
        seat = conn.execute(
            select(Activation.hostname).where(Activation.id == uuid.UUID(item["activation_id"]))
        ).scalar_one()
        requester = conn.execute(select(User.name).where(User.id == uuid.UUID(item["requested_by"]))).scalar()
        cost = item.get("cost")
        rows.append(item | {"hostname": seat, "customer": licence.customer, "product": licence.product,
                            "requester": requester, "cost": cost})  # fmt: skip
    return rows


def find_licences(conn: Connection, who: Principal, query: str) -> list[dict[str, Any]]:
    """Licences by customer name, the first characters of the key hint, a hostname or an activation id.
    A whole key is never a search term: only its hint is stored in the clear."""
    who.may("licence:read")
    text = query.strip()[:64]
    if not text:
        return []
    pattern = "%" + text.replace("%", "").replace("_", "").lower() + "%"
    hint = text.lstrip("…").replace("%", "").replace("_", "").upper()
    conditions = [func.lower(Customer.name).like(pattern), func.lower(Activation.hostname).like(pattern)]
    if 1 <= len(hint) <= 8:
        conditions.append(Licence.key_hint.like(hint + "%"))
    try:
        conditions.append(Activation.id == parse_id(text, "activation"))
        conditions.append(Licence.id == parse_id(text, "licence"))
    except NotFound:
        pass
    statement = _scoped(
        select(Licence.id, Licence.key_hint, Licence.seats, Licence.seats_in_use, Licence.status,
               Customer.name.label("customer"), Product.code.label("product"))
        .join(Customer, Customer.id == Licence.customer_id)
        .join(Product, Product.id == Licence.product_id)
        .outerjoin(Activation, Activation.licence_id == Licence.id)
        .where(or_(*conditions))
        .distinct()
        .order_by(Customer.name, Licence.id)
        .limit(50),
        who,
    )  # fmt: skip
    return [
        {"id": str(r.id), "key_hint": "…" + r.key_hint, "seats": r.seats, "seats_in_use": r.seats_in_use,
         "status": r.status, "customer": r.customer, "product": r.product}
        for r in conn.execute(statement)
    ]  # fmt: skip


def licence_audit(conn: Connection, who: Principal, licence_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """The licence's own hash-chained trail, newest first."""
    who.may("audit:read")
    licence = licence_in_scope(conn, who, licence_id)
    rows = conn.execute(
        select(AuditEvent.__table__)
        .where(AuditEvent.chain == audit.licence_chain(licence.id))
        .order_by(AuditEvent.seq.desc())
        .limit(limit)
    )
    return [
        {"seq": r.seq, "at": r.at.isoformat(), "actor": r.actor, "action": r.action, "subject": r.subject,
         "details": r.details, "hash": r.hash}
        for r in rows
    ]  # fmt: skip


def customers(conn: Connection, who: Principal) -> list[dict[str, Any]]:
    """The customers the caller sees (a reseller: its own), with how many licences each holds."""
    who.may("licence:read")
    count = select(func.count()).where(Licence.customer_id == Customer.id).scalar_subquery()
    statement = _scoped(
        select(Customer.id, Customer.name, Reseller.name.label("reseller"), count.label("licences"))
        .outerjoin(Reseller, Reseller.id == Customer.reseller_id)
        .order_by(Customer.name),
        who,
    )
    return [{"id": str(r.id), "name": r.name, "reseller": r.reseller, "licences": r.licences}
            for r in conn.execute(statement)]  # fmt: skip


def change_choices(conn: Connection, who: Principal, licence_id: str) -> dict[str, Any]:
    """What a licence may be changed to after sale: its seats and modules, and the plans it may move to (same
    kind, binding model and currency, not retired)."""
    who.may("licence:change")
    licence = licence_in_scope(conn, who, licence_id)
    plan = plan_values(conn, licence.plan_id)
    plans = conn.execute(
        select(Plan.name)
        .where(Plan.kind == plan.kind, Plan.model == plan.model, Plan.currency == plan.currency,
               Plan.retired_at.is_(None) | (Plan.id == plan.id))
        .order_by(Plan.name)
    ).scalars()  # fmt: skip
    return {
        "id": str(licence.id),
        "product": licence.product,
        "customer": licence.customer,
        "plan": plan.name,
        "seats": licence.seats,
        "seats_in_use": licence.seats_in_use,
        "features": changes.licence_features(licence, plan),
        "plans": list(plans),
    }


def issue_choices(conn: Connection, who: Principal) -> dict[str, Any]:
    """Products and plans a licence may be issued with (for the issue form)."""
    who.may("licence:issue")
    return {
        "products": [r.code for r in conn.execute(select(Product.code).order_by(Product.code))],
        "plans": [r.name for r in conn.execute(select(Plan.name).where(Plan.retired_at.is_(None)).order_by(Plan.name))],
    }


# -- the vendor's admin -----------------------------------------------------------------------------------


def catalogue(conn: Connection, who: Principal) -> dict[str, Any]:
    _admin_only(who, "catalogue:read")
    releases = conn.execute(
        select(Release.version, Release.released_on, Release.end_of_support, Product.code)
        .join(Product, Product.id == Release.product_id)
        .order_by(Product.code, Release.released_on)
    ).all()
    products = conn.execute(select(Product.__table__).order_by(Product.code)).all()
    return {
        "products": [{"code": r.code, "name": r.name} for r in products],
        "releases": [{"product": r.code, "version": r.version, "released": r.released_on.isoformat(),
                      "end_of_support": r.end_of_support.isoformat() if r.end_of_support else None}
                     for r in releases],
        "plans": [{"name": p.name, "kind": p.kind, "model": p.model, "price_cents": p.price_cents,
                   "currency": p.currency, "lease_days": p.lease_days, "notice_months": p.notice_months}
                  for p in conn.execute(select(Plan.__table__).order_by(Plan.name))],
        "resellers": [{"id": str(r.id), "name": r.name}
                      for r in conn.execute(select(Reseller.__table__).order_by(Reseller.name))],
        "customers": customers(conn, who),
    }  # fmt: skip


def add_product(conn: Connection, who: Principal, code: str, name: str, now: datetime) -> dict[str, Any]:
    _admin_only(who, "catalogue:manage")
    return licensing.add_product(conn, code, name, now, who.actor)


def add_release(conn: Connection, who: Principal, product: str, version: str, released: Any,
                end_of_support: Any, now: datetime) -> dict[str, Any]:  # fmt: skip
    _admin_only(who, "catalogue:manage")
    return licensing.add_release(conn, product, version, released, end_of_support, now, who.actor)


def add_plan(conn: Connection, who: Principal, name: str, fields: dict[str, Any], now: datetime) -> dict[str, Any]:
    _admin_only(who, "catalogue:manage")
    return licensing.add_plan(conn, name, fields, now, who.actor)


def add_customer(conn: Connection, who: Principal, name: str, reseller: str | None, now: datetime) -> dict[str, Any]:
    _admin_only(who, "catalogue:manage")
    return licensing.add_customer(conn, name, reseller, now, who.actor)


def add_reseller(conn: Connection, who: Principal, name: str, now: datetime) -> dict[str, Any]:
    _admin_only(who, "catalogue:manage")
    return licensing.add_reseller(conn, name, now, who.actor)


def api_tokens(conn: Connection, who: Principal) -> list[dict[str, Any]]:
    _admin_only(who, "tokens:read")
    rows = conn.execute(
        select(ApiToken.id, ApiToken.role, ApiToken.label, ApiToken.created_at, ApiToken.revoked_at,
               ApiToken.owner_id, User.email)
        .outerjoin(User, User.id == ApiToken.user_id)
        .order_by(ApiToken.revoked_at.is_not(None), ApiToken.created_at.desc())
    )  # fmt: skip
    return [
        {"id": str(r.id), "role": r.role, "label": r.label, "created_at": r.created_at.isoformat(),
         "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None, "user": r.email}
        for r in rows
    ]  # fmt: skip


def create_api_token(conn: Connection, who: Principal, role: str, owner: str | None, label: str,
                     now: datetime) -> dict[str, Any]:  # fmt: skip
    _admin_only(who, "tokens:manage")
    return licensing.create_api_token(conn, role, owner or None, label or role, now)


def revoke_api_token(conn: Connection, who: Principal, token_id: str, now: datetime) -> dict[str, Any]:
    _admin_only(who, "tokens:manage")
    tid = parse_id(token_id, "API token")
    row = conn.execute(select(ApiToken.id, ApiToken.revoked_at).where(ApiToken.id == tid)).first()
    if row is None:
        raise NotFound(f"no API token {token_id!r}")
    if row.revoked_at is None:
        conn.execute(update(ApiToken).where(ApiToken.id == tid).values(revoked_at=now))
        audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="token.revoke",
                     subject=f"token:{tid}", details={}, now=now)  # fmt: skip
    return {"id": str(tid), "revoked_at": (row.revoked_at or now).isoformat()}


# -- offline activation and a customer's people -----------------------------------------------------------


def offline_request_licence(conn: Connection, who: Principal, signed: str) -> dict[str, Any]:
    """The licence an uploaded offline request names, if the caller may see it (else LicenceNotFound).
    The request's signature is checked by the activation service; here it only has to be ours."""
    who.may("licence:read")
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(signed.split(".")[1] + "=="))
        key = str(payload["licence_key"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValidationFailed("not an offline request file (tessera-agent offline-request writes one)") from exc
    licence_id = conn.execute(select(Licence.id).where(Licence.key_hash == key_hash(key))).scalar_one_or_none()
    if licence_id is None:
        raise LicenceNotFound("no licence with this key")
    licence = licence_in_scope(conn, who, licence_id)
    return {"id": str(licence.id), "product": licence.product}


def staff_people(conn: Connection, who: Principal) -> list[dict[str, Any]]:
    """The vendor's admins and support engineers and the resellers' staff, with their portal state."""
    _admin_only(who, "users:read")
    rows = conn.execute(
        select(User.__table__, Reseller.name.label("reseller"), PortalAccount.user_id.label("account"),
               PortalAccount.totp_enabled_at)
        .outerjoin(Reseller, Reseller.id == User.reseller_id)
        .outerjoin(PortalAccount, PortalAccount.user_id == User.id)
        .where(User.role.in_(accounts.STAFF_ROLES))
        .order_by(User.role, User.name)
    )  # fmt: skip
    return [
        {"id": str(r.id), "name": r.name, "email": r.email, "role": r.role, "reseller": r.reseller,
         "disabled_at": r.disabled_at.isoformat() if r.disabled_at else None, "signed_up": r.account is not None,
         "totp": r.totp_enabled_at is not None}
        for r in rows
    ]  # fmt: skip


def add_staff(
    conn: Connection, who: Principal, email: str, name: str, role: str, reseller: str | None, now: datetime
) -> dict[str, Any]:
    """A new admin, support engineer or reseller employee, and the one-time link that lets them in."""
    _admin_only(who, "users:manage")
    accounts.add_staff_user(conn, email, name, role, reseller, now, actor=who.actor)
    return accounts.issue_link(conn, email, "invitation", now, actor=who.actor)


def staff_link(conn: Connection, who: Principal, user: str, purpose: str, now: datetime) -> dict[str, Any]:
    _admin_only(who, "users:manage")
    return accounts.issue_link(conn, _staff(conn, user).email, purpose, now, actor=who.actor)


def set_staff_disabled(conn: Connection, who: Principal, user: str, disabled: bool, now: datetime) -> dict[str, Any]:
    """Disabling signs a person out everywhere and revokes their API tokens; enabling lets them sign in again."""
    _admin_only(who, "users:manage")
    target = _staff(conn, user)
    if disabled and who.user_id == target.id:
        raise Conflict("you cannot disable yourself: ask another admin")
    if (target.disabled_at is not None) != disabled:
        conn.execute(update(User).where(User.id == target.id).values(disabled_at=now if disabled else None))
        if disabled:
            conn.execute(update(ApiToken).where(ApiToken.user_id == target.id, ApiToken.revoked_at.is_(None))
                         .values(revoked_at=now))  # fmt: skip
            portal_sessions.end_everywhere(conn, target.id, now)
        action = "user.disable" if disabled else "user.enable"
        audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action=action, subject=f"user:{target.id}",
                     details={"role": target.role}, now=now)  # fmt: skip
    return {"id": str(target.id), "disabled": disabled}


def _staff(conn: Connection, user: str) -> Any:
    row = conn.execute(select(User.__table__).where(User.id == parse_id(user, "user"),
                                                    User.role.in_(accounts.STAFF_ROLES))).first()  # fmt: skip
    if row is None:
        raise NotFound(f"no staff user {user[:64]!r}")
    return row


def invite_user(conn: Connection, who: Principal, customer: str, user: str, now: datetime) -> dict[str, Any]:
    """A one-time portal link for one of the customer's users (mailed to them when the server sends mail)."""
    who.may("users:manage")
    row = customer_in_scope(conn, who, customer)
    uid = parse_id(user, "user")
    email = conn.execute(select(User.email).where(User.id == uid, User.customer_id == row.id)).scalar_one_or_none()
    if email is None:
        raise NotFound(f"no user {user!r} at this customer")
    return accounts.issue_link(conn, email, "invitation", now, actor=who.actor)
