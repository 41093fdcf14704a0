"""The vendor's catalogue and its accounts after they are made: products, releases, plans, resellers, customers
and API tokens listed, shown, renamed and disabled (adding them is server.services.licensing's).

A disabled product, reseller or customer takes no new licence (`issue_licence` refuses with a 409); the
licences it has run on. A plan's "disabled" is its retirement (server.services.changes). Every change is audited
on the vendor's chain as the person or token making it.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from server.db.models import ApiToken, Customer, Licence, Plan, Product, Release, Reseller
from server.domain.access import RESELLER
from server.domain.errors import Conflict, NotFound, ValidationFailed
from server.services import audit, licensing
from server.services.access import Principal, by_id_or_name, customer_in_scope, parse_id
from server.services.licensing import PLAN_FIELDS
from server.services.listing import Page, Slice, cut, keyset
from server.services.requests import has_control_characters


def _iso(moment: datetime | date | None) -> str | None:
    return moment.isoformat() if moment else None


def _event(conn: Connection, who: Principal, action: str, subject: str, details: dict[str, Any], now: datetime) -> None:
    audit.record(conn, chain=audit.VENDOR_CHAIN, actor=who.actor, action=action, subject=subject, details=details,
                 now=now)  # fmt: skip


def _rename(conn: Connection, model: Any, row_id: uuid.UUID, values: dict[str, Any], what: str) -> None:
    for value in values.values():
        if isinstance(value, str) and (not value or has_control_characters(value)):
            raise ValidationFailed(f"a {what}'s name is 1 to 200 characters, none of them a control character")
    try:
        with conn.begin_nested():
            conn.execute(update(model).where(model.id == row_id).values(**values))
    except IntegrityError as exc:
        raise Conflict(f"another {what} is already called {next(iter(values.values()))!r}") from exc


def _switch(conn: Connection, who: Principal, model: Any, row: Any, what: str, disabled: bool, now: datetime) -> Any:
    """Disable (or enable again) a product, reseller or customer; saying twice what already holds is a 409."""
    called = row.code if model is Product else row.name
    if disabled and row.disabled_at is not None:
        raise Conflict(f"{what} {called!r} was disabled on {row.disabled_at.date().isoformat()}")
    if not disabled and row.disabled_at is None:
        raise Conflict(f"{what} {called!r} is not disabled")
    conn.execute(update(model).where(model.id == row.id).values(disabled_at=now if disabled else None))
    _event(conn, who, f"{what}.{'disable' if disabled else 'enable'}", f"{what}:{row.id}", {"name": called}, now)
    return conn.execute(select(model.__table__).where(model.id == row.id)).one()


# -- products and releases -----------------------------------------------------------------------------------


def product_json(r: Any) -> dict[str, Any]:
    return {"id": str(r.id), "code": r.code, "name": r.name, "created_at": r.created_at.isoformat(),
            "disabled_at": _iso(r.disabled_at)}  # fmt: skip


def _product(conn: Connection, code: str) -> Any:
    row = conn.execute(select(Product.__table__).where(Product.code == code)).first()
    if row is None:
        raise NotFound(f"no product {code[:64]!r}")
    return row


def products_page(conn: Connection, who: Principal, page: Page) -> Slice:
    who.may("catalogue:read")
    rows = conn.execute(keyset(select(Product.__table__), (Product.created_at, Product.id), page)).all()
    return cut(rows, page, lambda r: (r.created_at, r.id), product_json)


def show_product(conn: Connection, who: Principal, code: str) -> dict[str, Any]:
    """A product, its releases (oldest first) and how many licences it has."""
    who.may("catalogue:read")
    row = _product(conn, code)
    releases = conn.execute(
        select(Release.__table__).where(Release.product_id == row.id).order_by(Release.released_on, Release.id)
    )
    licences = conn.execute(select(Licence.id).where(Licence.product_id == row.id)).all()
    return product_json(row) | {"releases": [release_json(r, code) for r in releases], "licences": len(licences)}


def add_product(conn: Connection, who: Principal, code: str, name: str | None, now: datetime) -> dict[str, Any]:
    who.may("catalogue:manage")
    licensing.add_product(conn, code, name or code, now, who.actor)
    return product_json(_product(conn, code))


def update_product(conn: Connection, who: Principal, code: str, name: str, now: datetime) -> dict[str, Any]:
    """A product's display name; its code is what agents ask for and never changes."""
    who.may("catalogue:manage")
    row = _product(conn, code)
    _rename(conn, Product, row.id, {"name": name}, "product")
    _event(conn, who, "product.update", f"product:{row.id}", {"name": name, "from": row.name}, now)
    return product_json(_product(conn, code))


def disable_product(conn: Connection, who: Principal, code: str, disabled: bool, now: datetime) -> dict[str, Any]:
    who.may("catalogue:manage")
    return product_json(_switch(conn, who, Product, _product(conn, code), "product", disabled, now))


def release_json(r: Any, product: str) -> dict[str, Any]:
    return {"id": str(r.id), "product": product, "version": r.version, "released": r.released_on.isoformat(),
            "end_of_support": _iso(r.end_of_support)}  # fmt: skip


def _release(conn: Connection, product: Any, version: str) -> Any:
    row = conn.execute(
        select(Release.__table__).where(Release.product_id == product.id, Release.version == version)
    ).first()
    if row is None:
        raise NotFound(f"no release {version[:64]!r} of {product.code!r}")
    return row


def add_release(conn: Connection, who: Principal, code: str, version: str, released: date, end: date | None,
                now: datetime) -> dict[str, Any]:  # fmt: skip
    who.may("catalogue:manage")
    licensing.add_release(conn, code, version, released, end, now, who.actor)
    return release_json(_release(conn, _product(conn, code), version), code)


def releases_page(conn: Connection, who: Principal, code: str, page: Page) -> Slice:
    """A product's releases, oldest release date first."""
    who.may("catalogue:read")
    product = _product(conn, code)
    statement = select(Release.__table__).where(Release.product_id == product.id)
    rows = conn.execute(keyset(statement, (Release.released_on, Release.id), page)).all()
    return cut(rows, page, lambda r: (r.released_on, r.id), lambda r: release_json(r, code))


def show_release(conn: Connection, who: Principal, code: str, version: str) -> dict[str, Any]:
    who.may("catalogue:read")
    return release_json(_release(conn, _product(conn, code), version), code)


def update_release(conn: Connection, who: Principal, code: str, version: str, changes: dict[str, Any],
                   now: datetime) -> dict[str, Any]:  # fmt: skip
    """A release's dates: when it came out (what maintenance must reach to entitle to it), its end of support."""
    who.may("catalogue:manage")
    product = _product(conn, code)
    row = _release(conn, product, version)
    released = changes.get("released", row.released_on)
    end = changes.get("end_of_support", row.end_of_support)
    if end is not None and end < released:
        if {"released", "end_of_support"} <= set(changes):
            raise ValidationFailed("end of support cannot come before the release date")
        # One date sent, at odds with the other as it stands: the request is fine, the release's state is not.
        raise Conflict(f"release {version!r} of {code!r} came out on {released.isoformat()}, "
                       f"after an end of support on {end.isoformat()}")  # fmt: skip
    conn.execute(update(Release).where(Release.id == row.id).values(released_on=released, end_of_support=end))
    shown = {k: _iso(v) for k, v in changes.items()}
    _event(conn, who, "release.update", f"release:{row.id}", {"product": code, "version": version, **shown}, now)
    return release_json(_release(conn, product, version), code)


# -- plans ----------------------------------------------------------------------------------------------------


def plan_json(r: Any) -> dict[str, Any]:
    return {"id": str(r.id), "name": r.name, **{field: getattr(r, field) for field in PLAN_FIELDS},
            "created_at": r.created_at.isoformat(), "retired_at": _iso(r.retired_at)}  # fmt: skip


def plans_page(conn: Connection, who: Principal, page: Page) -> Slice:
    who.may("catalogue:read")
    rows = conn.execute(keyset(select(Plan.__table__), (Plan.created_at, Plan.id), page)).all()
    return cut(rows, page, lambda r: (r.created_at, r.id), plan_json)


def show_plan(conn: Connection, who: Principal, name: str) -> dict[str, Any]:
    who.may("catalogue:read")
    row = conn.execute(select(Plan.__table__).where(Plan.name == name)).first()
    if row is None:
        raise NotFound(f"no plan {name[:100]!r}")
    return plan_json(row)


# -- resellers and customers ----------------------------------------------------------------------------------


def reseller_json(r: Any) -> dict[str, Any]:
    return {"id": str(r.id), "name": r.name, "created_at": r.created_at.isoformat(),
            "disabled_at": _iso(r.disabled_at)}  # fmt: skip


def _reseller(conn: Connection, who: Principal, reseller: str) -> Any:
    """A reseller by id (or name, for the operator): staff see each, a reseller itself (another's is a 404)."""
    row = conn.execute(select(Reseller.__table__).where(by_id_or_name(who, Reseller, reseller, "reseller"))).first()
    if row is None or (who.role == RESELLER and row.id != who.owner_id):
        raise NotFound(f"no reseller {reseller[:100]!r}")
    return row


def add_reseller(conn: Connection, who: Principal, name: str, now: datetime) -> dict[str, Any]:
    who.may("catalogue:manage")
    made = licensing.add_reseller(conn, name, now, who.actor)
    return reseller_json(_reseller(conn, who, made["id"]))


def resellers_page(conn: Connection, who: Principal, page: Page) -> Slice:
    who.may("catalogue:read")
    rows = conn.execute(keyset(select(Reseller.__table__), (Reseller.created_at, Reseller.id), page)).all()
    return cut(rows, page, lambda r: (r.created_at, r.id), reseller_json)


def show_reseller(conn: Connection, who: Principal, reseller: str) -> dict[str, Any]:
    if who.role != RESELLER:
        who.may("catalogue:read")
    row = _reseller(conn, who, reseller)
    customers = conn.execute(select(Customer.id).where(Customer.reseller_id == row.id)).all()
    return reseller_json(row) | {"customers": len(customers)}


def update_reseller(conn: Connection, who: Principal, reseller: str, name: str, now: datetime) -> dict[str, Any]:
    who.may("catalogue:manage")
    row = _reseller(conn, who, reseller)
    _rename(conn, Reseller, row.id, {"name": name}, "reseller")
    _event(conn, who, "reseller.update", f"reseller:{row.id}", {"name": name, "from": row.name}, now)
    return reseller_json(_reseller(conn, who, str(row.id)))


def disable_reseller(conn: Connection, who: Principal, reseller: str, disabled: bool, now: datetime) -> dict[str, Any]:
    who.may("catalogue:manage")
    return reseller_json(_switch(conn, who, Reseller, _reseller(conn, who, reseller), "reseller", disabled, now))


_CUSTOMERS = select(Customer.__table__, Reseller.name.label("reseller")).outerjoin(
    Reseller, Reseller.id == Customer.reseller_id
)


def customer_json(r: Any) -> dict[str, Any]:
    return {"id": str(r.id), "name": r.name, "reseller_id": str(r.reseller_id) if r.reseller_id else None,
            "reseller": r.reseller, "created_at": r.created_at.isoformat(),
            "disabled_at": _iso(r.disabled_at)}  # fmt: skip


def add_customer(conn: Connection, who: Principal, name: str, reseller_id: str | None, now: datetime) -> dict[str, Any]:
    """A new customer, sold to by a reseller (by id) or by the vendor directly."""
    who.may("customers:manage")
    reseller = _reseller(conn, who, reseller_id).name if reseller_id is not None else None
    made = licensing.add_customer(conn, name, reseller, now, who.actor)
    return customer_json(_customer(conn, uuid.UUID(made["id"])))


def customers_page(conn: Connection, who: Principal, page: Page) -> Slice:
    """Every customer (staff), or the reseller's own."""
    who.may("customers:read")
    statement = _CUSTOMERS
    if who.role == RESELLER:
        statement = statement.where(Customer.reseller_id == who.owner_id)
    rows = conn.execute(keyset(statement, (Customer.created_at, Customer.id), page)).all()
    return cut(rows, page, lambda r: (r.created_at, r.id), customer_json)


def _customer(conn: Connection, customer_id: uuid.UUID) -> Any:
    return conn.execute(_CUSTOMERS.where(Customer.id == customer_id)).one()


def show_customer(conn: Connection, who: Principal, customer: str) -> dict[str, Any]:
    """A customer (another reseller's is a 404) and how many licences it holds."""
    who.may("customers:read")
    row = customer_in_scope(conn, who, customer)
    licences = conn.execute(select(Licence.id).where(Licence.customer_id == row.id)).all()
    return customer_json(_customer(conn, row.id)) | {"licences": len(licences)}


def update_customer(conn: Connection, who: Principal, customer: str, name: str, now: datetime) -> dict[str, Any]:
    who.may("customers:manage")
    row = customer_in_scope(conn, who, customer)
    _rename(conn, Customer, row.id, {"name": name}, "customer")
    _event(conn, who, "customer.update", f"customer:{row.id}", {"name": name, "from": row.name}, now)
    return customer_json(_customer(conn, row.id))


def disable_customer(conn: Connection, who: Principal, customer: str, disabled: bool, now: datetime) -> dict[str, Any]:
    who.may("customers:manage")
    row = _switch(conn, who, Customer, customer_in_scope(conn, who, customer), "customer", disabled, now)
    return customer_json(_customer(conn, row.id))


# -- API tokens -----------------------------------------------------------------------------------------------


def token_json(r: Any) -> dict[str, Any]:
    """What a token is, never the token (only its hash is kept, and not shown either)."""
    return {"id": str(r.id), "role": r.role, "label": r.label, "owner_id": str(r.owner_id) if r.owner_id else None,
            "user_id": str(r.user_id) if r.user_id else None, "created_at": r.created_at.isoformat(),
            "revoked_at": _iso(r.revoked_at)}  # fmt: skip


_TOKENS = select(ApiToken.id, ApiToken.role, ApiToken.label, ApiToken.owner_id, ApiToken.user_id,
                 ApiToken.created_at, ApiToken.revoked_at)  # fmt: skip


def _token(conn: Connection, token_id: str) -> Any:
    row = conn.execute(_TOKENS.where(ApiToken.id == parse_id(token_id, "token"))).first()
    if row is None:
        raise NotFound(f"no token {token_id[:64]!r}")
    return row


def tokens_page(conn: Connection, who: Principal, page: Page) -> Slice:
    who.may("tokens:manage")
    rows = conn.execute(keyset(_TOKENS, (ApiToken.created_at, ApiToken.id), page)).all()
    return cut(rows, page, lambda r: (r.created_at, r.id), token_json)


def show_token(conn: Connection, who: Principal, token_id: str) -> dict[str, Any]:
    who.may("tokens:manage")
    return token_json(_token(conn, token_id))


def update_token(conn: Connection, who: Principal, token_id: str, label: str, now: datetime) -> dict[str, Any]:
    who.may("tokens:manage")
    row = _token(conn, token_id)
    if not label or has_control_characters(label):
        raise ValidationFailed("a token's label is 1 to 200 characters, none of them a control character")
    conn.execute(update(ApiToken).where(ApiToken.id == row.id).values(label=label))
    _event(conn, who, "token.update", f"token:{row.id}", {"label": label, "from": row.label}, now)
    return token_json(_token(conn, token_id))


def revoke_token(conn: Connection, who: Principal, token_id: str, now: datetime) -> dict[str, Any]:
    """A revoked token authenticates no more, from the next request on; revoking twice is a 409."""
    who.may("tokens:manage")
    row = _token(conn, token_id)
    if row.revoked_at is not None:
        raise Conflict(f"token {token_id[:64]!r} was revoked on {row.revoked_at.date().isoformat()}")
    conn.execute(update(ApiToken).where(ApiToken.id == row.id).values(revoked_at=now))
    _event(conn, who, "token.revoke", f"token:{row.id}", {"role": row.role, "label": row.label}, now)
    return token_json(_token(conn, token_id))
