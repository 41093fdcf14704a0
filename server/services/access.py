"""Who is asking, and which objects they may see: a reseller its own customers, a customer its own licences.

An object of another tenant answers exactly like a missing one (404), so ids cannot be probed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from server.db.models import Customer, Licence, Plan, Product
from server.domain.access import ADMIN, CUSTOMER_ROLES, RESELLER, SUPPORT, require
from server.domain.errors import LicenceNotFound, NotFound


@dataclass(frozen=True)
class Principal:
    role: str
    owner_id: uuid.UUID | None  # the reseller or customer a token belongs to
    token_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None

    @property
    def actor(self) -> str:
        """Who the audit trail names: the person a token belongs to, else the token itself (its owner and
        label are on its row); the operator's CLI holds no token."""
        if self.user_id is not None:
            return f"user:{self.user_id}"
        if self.token_id is not None:
            return f"token:{self.token_id}"
        return "operator:cli"

    def may(self, action: str) -> None:
        require(self.role, action)


OPERATOR = Principal(role=ADMIN, owner_id=None)
SYSTEM_RENEWAL = "system:renewal"


def parse_id(text: str | uuid.UUID, what: str) -> uuid.UUID:
    if isinstance(text, uuid.UUID):
        return text
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound(f"no {what} {text!r}") from None


def sees_customer(who: Principal, customer_id: uuid.UUID, reseller_id: uuid.UUID | None) -> bool:
    if who.role in (ADMIN, SUPPORT):
        return True
    if who.role == RESELLER:
        return reseller_id is not None and reseller_id == who.owner_id
    if who.role in CUSTOMER_ROLES:
        return customer_id == who.owner_id
    return False


_LICENCE_IN_SCOPE = (
    select(
        Licence.__table__,
        Customer.reseller_id,
        Customer.name.label("customer"),
        Plan.name.label("plan"),
        Product.code.label("product"),
    )
    .join(Customer, Customer.id == Licence.customer_id)
    .join(Plan, Plan.id == Licence.plan_id)
    .join(Product, Product.id == Licence.product_id)
)


def licence_in_scope(conn: Connection, who: Principal, licence_id: str | uuid.UUID, *, lock: bool = False) -> Any:
    """The licence row (with its plan, product and customer names), locked if asked, or LicenceNotFound."""
    lid = parse_id(licence_id, "licence")
    statement = _LICENCE_IN_SCOPE.where(Licence.id == lid)
    if lock:
        statement = statement.with_for_update(of=Licence)
    row = conn.execute(statement).first()
    if row is None or not sees_customer(who, row.customer_id, row.reseller_id):
        raise LicenceNotFound(f"no licence {str(licence_id)!r}")
    return row


def by_id_or_name(who: Principal, model: Any, text: str | uuid.UUID, what: str) -> Any:
    """The condition finding `model` by id, or by name for the operator's CLI (API callers use ids)."""
    try:
        return model.id == parse_id(text, what)
    except NotFound:
        if who.token_id is not None:
            raise
        return model.name == str(text)


def customer_in_scope(conn: Connection, who: Principal, customer: str | uuid.UUID, *, lock: bool = False) -> Any:
    """A customer by id (or, for the operator's CLI, by name) that `who` may see, its row locked if asked."""
    condition = by_id_or_name(who, Customer, customer, "customer")
    statement = select(Customer.__table__).where(condition)
    row = conn.execute(statement.with_for_update() if lock else statement).first()
    if row is None or not sees_customer(who, row.id, row.reseller_id):
        raise NotFound(f"no customer {str(customer)!r}")
    return row


def plan_values(conn: Connection, plan_id: uuid.UUID) -> Any:
    return conn.execute(select(Plan.__table__).where(Plan.id == plan_id)).one()
