"""Who may do what (DESIGN section 1 and issue #4's roles). Tenancy (whose objects) is checked by the services."""

from __future__ import annotations

from server.domain.errors import RoleForbidden

ADMIN = "admin"
SUPPORT = "support"
RESELLER = "reseller"
CUSTOMER_ADMIN = "customer-admin"
CUSTOMER_USER = "customer-user"
ROLES = (ADMIN, SUPPORT, RESELLER, CUSTOMER_ADMIN, CUSTOMER_USER)
CUSTOMER_ROLES = frozenset({CUSTOMER_ADMIN, CUSTOMER_USER})

PERMISSIONS: dict[str, frozenset[str]] = {
    "licence:read": frozenset(ROLES),
    "licence:issue": frozenset({ADMIN, RESELLER}),
    "licence:renew": frozenset({ADMIN, RESELLER}),
    "licence:reinstate": frozenset({ADMIN, RESELLER}),
    "licence:cancel": frozenset({ADMIN, SUPPORT, RESELLER, CUSTOMER_ADMIN}),  # support: letters, calls (003)
    "licence:status": frozenset({ADMIN}),
    # 002: the reseller renews and extends ("erneuern/erweitern") its customers' licences: seats, modules, plan.
    "licence:change": frozenset({ADMIN, RESELLER}),
    "licence:end": frozenset({ADMIN}),  # a contract with mandatory maintenance ends only by the vendor's act
    "seat:release": frozenset({ADMIN, SUPPORT, CUSTOMER_ADMIN}),
    "seat:label": frozenset({ADMIN, SUPPORT, CUSTOMER_ADMIN}),
    "transfer:read": frozenset(ROLES),
    "transfer:request": frozenset({CUSTOMER_ADMIN, CUSTOMER_USER}),  # and only a named contact
    "transfer:decide": frozenset({ADMIN, SUPPORT}),
    "dongle:replace": frozenset({ADMIN, SUPPORT}),
    "users:read": frozenset({ADMIN, SUPPORT, RESELLER, CUSTOMER_ADMIN, CUSTOMER_USER}),
    "users:manage": frozenset({ADMIN, RESELLER, CUSTOMER_ADMIN}),
    "settlement:read": frozenset({ADMIN, RESELLER}),
    # 003: the customer "ontvangt hiervan telkens een bewijs": its administrators see the ledger, its named
    # contacts (checked by the service) each renewal's confirmation.
    "ledger:read": frozenset({ADMIN, SUPPORT, RESELLER, CUSTOMER_ADMIN}),
    "confirmation:read": frozenset(ROLES),
    "audit:read": frozenset({ADMIN, SUPPORT}),
    # The reseller is the customer's first contact for technical support (002).
    "support:check": frozenset({ADMIN, SUPPORT, RESELLER}),
    "plan:price": frozenset({ADMIN}),
    "plan:manage": frozenset({ADMIN}),
    # The catalogue (products, releases, plans, resellers) is the vendor's: its staff read it, admins change it.
    "catalogue:read": frozenset({ADMIN, SUPPORT}),
    "catalogue:manage": frozenset({ADMIN}),
    # Customers: staff see every one, a reseller its own (the services check whose).
    "customers:read": frozenset({ADMIN, SUPPORT, RESELLER}),
    "customers:manage": frozenset({ADMIN}),
    "tokens:manage": frozenset({ADMIN}),
}


def require(role: str, action: str) -> None:
    allowed = PERMISSIONS[action]
    if role not in allowed:
        raise RoleForbidden(f"the {role} role may not do {action}", action=action, role=role)
