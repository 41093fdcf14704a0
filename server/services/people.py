"""A customer's users, its two named contacts, and API tokens tied to users (DESIGN section 2, 003)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from server.db.ids import new_id
from server.db.models import ApiToken, User
from server.domain.errors import Conflict, NotFound, ValidationFailed
from server.services import audit
from server.services.access import Principal, customer_in_scope, parse_id
from server.services.licensing import create_token_row
from server.services.listing import Page, Slice, cut, keyset

CONTACTS = ("system-administrator", "deputy")


def user_json(r: Any) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "name": r.name,
        "email": r.email,
        "role": r.role,
        "contact": r.contact,
        "created_at": r.created_at.isoformat(),
        "disabled_at": r.disabled_at.isoformat() if r.disabled_at else None,
    }


def list_users(conn: Connection, who: Principal, customer: str) -> dict[str, Any]:
    who.may("users:read")
    row = customer_in_scope(conn, who, customer)
    users = conn.execute(select(User.__table__).where(User.customer_id == row.id).order_by(User.created_at))
    return {"customer": {"id": str(row.id), "name": row.name}, "users": [user_json(u) for u in users]}


def users_page(conn: Connection, who: Principal, customer: str, page: Page) -> tuple[dict[str, Any], Slice]:
    """The customer, and one page of its users, oldest first by (created_at, id)."""
    who.may("users:read")
    row = customer_in_scope(conn, who, customer)
    statement = select(User.__table__).where(User.customer_id == row.id)
    users = conn.execute(keyset(statement, (User.created_at, User.id), page)).all()
    return {"id": str(row.id), "name": row.name}, cut(users, page, lambda u: (u.created_at, u.id), user_json)


def add_user(
    conn: Connection, who: Principal, customer: str, name: str, email: str, role: str, now: datetime
) -> dict[str, Any]:
    """A new user of the customer, with an API token shown once."""
    who.may("users:manage")
    if role not in ("customer-admin", "customer-user"):
        raise ValidationFailed("role must be customer-admin or customer-user")
    row = customer_in_scope(conn, who, customer)
    user_id = new_id()
    try:
        with conn.begin_nested():
            conn.execute(
                insert(User).values(
                    id=user_id, customer_id=row.id, name=name, email=email.lower(), role=role, created_at=now
                )
            )
    except IntegrityError as exc:
        raise Conflict(f"a user with e-mail {email!r} already exists") from exc
    token = create_token_row(conn, role, row.id, f"{name} <{email.lower()}>", now, user_id=user_id, actor=who.actor)
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="user.add", subject=f"user:{user_id}",
                 details={"customer": str(row.id), "role": role}, now=now)  # fmt: skip
    user = conn.execute(select(User.__table__).where(User.id == user_id)).one()
    return user_json(user) | {"token": token["token"]}


def _user_of(conn: Connection, customer_id: uuid.UUID, user: str) -> Any:
    uid = parse_id(user, "user")
    row = conn.execute(select(User.__table__).where(User.id == uid, User.customer_id == customer_id)).first()
    if row is None:
        raise NotFound(f"no user {user!r} at this customer")
    return row


def disable_user(conn: Connection, who: Principal, customer: str, user: str, now: datetime) -> dict[str, Any]:
    """Disables the user and revokes its tokens; a named contact must be replaced first."""
    who.may("users:manage")
    # The customer row is the lock for its contacts: a user being named as a contact meanwhile is seen here.
    row = customer_in_scope(conn, who, customer, lock=True)
    target = _user_of(conn, row.id, user)
    if target.contact is not None:
        raise Conflict(f"this user is the customer's {target.contact}: name another one first")
    if target.disabled_at is None:
        conn.execute(update(User).where(User.id == target.id).values(disabled_at=now))
        conn.execute(
            update(ApiToken).where(ApiToken.user_id == target.id, ApiToken.revoked_at.is_(None)).values(revoked_at=now)
        )
        audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="user.disable",
                     subject=f"user:{target.id}", details={"customer": str(row.id)}, now=now)  # fmt: skip
    return user_json(conn.execute(select(User.__table__).where(User.id == target.id)).one())


def enable_user(conn: Connection, who: Principal, customer: str, user: str, now: datetime) -> dict[str, Any]:
    """A disabled user may sign in again (its password stays); its API tokens stay revoked: make new ones."""
    who.may("users:manage")
    row = customer_in_scope(conn, who, customer, lock=True)
    target = _user_of(conn, row.id, user)
    if target.disabled_at is not None:
        conn.execute(update(User).where(User.id == target.id).values(disabled_at=None))
        audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="user.enable",
                     subject=f"user:{target.id}", details={"customer": str(row.id)}, now=now)  # fmt: skip
    return user_json(conn.execute(select(User.__table__).where(User.id == target.id)).one())


def set_contacts(
    conn: Connection, who: Principal, customer: str, system_administrator: str, deputy: str, now: datetime
) -> dict[str, Any]:
    """The customer's two named contacts (003): two different, active users of that customer."""
    who.may("users:manage")
    # Locked first, then read: two changes at once would both clear the old pair and then both name theirs
    # (the unique (customer, contact) index refused the second), or name a user being disabled meanwhile.
    row = customer_in_scope(conn, who, customer, lock=True)
    admin, stand_in = _user_of(conn, row.id, system_administrator), _user_of(conn, row.id, deputy)
    if admin.id == stand_in.id:
        raise ValidationFailed("the system administrator and the deputy must be two different people")
    if admin.disabled_at is not None or stand_in.disabled_at is not None:
        raise ValidationFailed("a named contact must be an active user")
    conn.execute(update(User).where(User.customer_id == row.id, User.contact.is_not(None)).values(contact=None))
    conn.execute(update(User).where(User.id == admin.id).values(contact="system-administrator"))
    conn.execute(update(User).where(User.id == stand_in.id).values(contact="deputy"))
    details = {"system_administrator": str(admin.id), "deputy": str(stand_in.id)}
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action="customer.contacts",
                 subject=f"customer:{row.id}", details=details, now=now)  # fmt: skip
    return {"customer": str(row.id), **details}
