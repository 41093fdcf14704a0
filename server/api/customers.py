"""Who am I; a customer's users and named contacts; a reseller's settlement; the audit trail;
the signed list of revoked dongles."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from server.api.auth import now, only_query, principal, query_int, query_text, run
from server.api.context import SERVICES, SIGNER
from server.api.openapi import bearer_op, operation
from server.api.paging import AT, ID, NUMBER, PAGE_PARAMETERS, PAGE_QUERY, TEXT, page_response, read_page
from server.api.problems import read_model
from server.api.schemas import (
    AuditEventPage,
    Contacts,
    DongleRevocations,
    NewUser,
    Settlement,
    User,
    UserPage,
    WhoAmI,
    answer,
)
from server.domain.errors import Conflict, InvalidCursor, NotFound, RoleForbidden, ServiceUnavailable, ValidationFailed
from server.services import people, terms, transfers
from server.services.listing import audit_page
from server.services.requests import PRODUCT_CODE, PRODUCT_CODE_PATTERN, TEXT_PATTERN, ContactsBody, NewUserBody

routes = web.RouteTableDef()
REVOCATIONS_TTL = timedelta(days=7)


@routes.get("/v1/whoami")
async def whoami(request: web.Request) -> web.Response:
    who = await principal(request)
    return answer(WhoAmI, {
        "role": who.role,
        "owner_id": str(who.owner_id) if who.owner_id else None,
        "user_id": str(who.user_id) if who.user_id else None,
    })  # fmt: skip


@routes.get("/v1/customers/{customer_id}/users")
async def list_users(request: web.Request) -> web.Response:
    only_query(request, *PAGE_QUERY)
    listing = f"users:{request.match_info['customer_id']}"
    page = read_page(request, listing, AT + ID)
    customer, shown = await run(request, people.users_page, request.match_info["customer_id"], page)
    return page_response(request, listing, page, shown, UserPage, customer=customer)


@routes.post("/v1/customers/{customer_id}/users")
async def add_user(request: web.Request) -> web.Response:
    body = await read_model(request, NewUserBody)
    result = await run(
        request, people.add_user, request.match_info["customer_id"], body.name, body.email, body.role, now()
    )
    return answer(NewUser, result, 201)


@routes.delete("/v1/customers/{customer_id}/users/{user_id}")
async def disable_user(request: web.Request) -> web.Response:
    result = await run(
        request, people.disable_user, request.match_info["customer_id"], request.match_info["user_id"], now()
    )
    return answer(User, result)


@routes.put("/v1/customers/{customer_id}/contacts")
async def set_contacts(request: web.Request) -> web.Response:
    body = await read_model(request, ContactsBody)
    result = await run(
        request, people.set_contacts, request.match_info["customer_id"], body.system_administrator, body.deputy, now()
    )
    return answer(Contacts, result)


@routes.get("/v1/resellers/{reseller_id}/settlement")
async def settlement(request: web.Request) -> web.Response:
    only_query(request, "year", "format")
    year = query_int(request, "year", now().year, 2000, 2200)
    output = request.query.get("format", "json")
    if output not in ("json", "csv"):
        raise ValidationFailed("format must be json or csv")
    report = await run(request, terms.settlement, request.match_info["reseller_id"], year)
    if output == "json":
        return answer(Settlement, report)
    filename = f"settlement-{report['reseller']['name']}-{year}.csv".replace('"', "")
    return web.Response(
        text=terms.settlement_csv(report),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@routes.get("/v1/audit")
async def audit_events(request: web.Request) -> web.Response:
    only_query(request, "subject", *PAGE_QUERY)
    subject = query_text(request, "subject", 100)
    page = read_page(request, "audit", AT + TEXT + NUMBER)
    return page_response(request, "audit", page, await run(request, audit_page, subject, page), AuditEventPage)


@routes.get("/v1/products/{product}/dongle-revocations")
async def dongle_revocations(request: web.Request) -> web.Response:
    """Public and signed: agents fetch it on refresh and refuse a revoked dongle (rule 6)."""
    product = request.match_info["product"]
    if not PRODUCT_CODE.fullmatch(product):
        raise ValidationFailed("a product code is 1 to 64 lower-case letters, digits, dots, dashes or underscores")
    serials = await request.app[SERVICES].db.run(transfers.revoked_serials, product)
    signed = request.app[SIGNER].sign_revocations(product, [s["serial"] for s in serials], now(), REVOCATIONS_TTL)
    return answer(DongleRevocations, {"product": product, "revoked": serials, "signed": signed})


CUSTOMER = ("customer_id",)
PEOPLE = (RoleForbidden, NotFound)
PATHS = {
    "/v1/whoami": {"get": bearer_op("The caller's role and owner", answers=WhoAmI)},
    "/v1/customers/{customer_id}/users": {
        "get": bearer_op(
            "A customer and a page of its users and named contacts, oldest first",
            answers=UserPage,
            params=CUSTOMER,
            query=PAGE_PARAMETERS,
            refusals=(*PEOPLE, InvalidCursor),
        ),
        "post": bearer_op(
            "Add a user (customer-admin, reseller, admin)", answers=NewUser, body="NewUserBody", ok="201",
            params=CUSTOMER, refusals=(*PEOPLE, Conflict),
        ),
    },
    "/v1/customers/{customer_id}/users/{user_id}": {
        "delete": bearer_op("Disable a user and revoke its tokens", answers=User, params=("customer_id", "user_id"),
                            refusals=(*PEOPLE, Conflict))
    },
    "/v1/customers/{customer_id}/contacts": {
        "put": bearer_op("Name the system administrator and deputy", answers=Contacts, body="ContactsBody",
                         params=CUSTOMER, refusals=PEOPLE)
    },
    "/v1/resellers/{reseller_id}/settlement": {
        "get": bearer_op(
            "A reseller's yearly settlement (JSON or CSV)",
            answers=Settlement,
            params=("reseller_id",),
            query={
                "year": {"type": "integer", "minimum": 2000, "maximum": 2200},
                "format": {"type": "string", "enum": ["json", "csv"]},
            },
            refusals=PEOPLE,
        )
    },
    "/v1/audit": {
        "get": bearer_op(
            "Audit events, newest first (admin, support)",
            answers=AuditEventPage,
            query={
                "subject": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": TEXT_PATTERN},
                **PAGE_PARAMETERS,
            },
            refusals=(RoleForbidden, InvalidCursor),
        )
    },
}  # fmt: skip
PATHS["/v1/resellers/{reseller_id}/settlement"]["get"]["responses"]["200"]["content"]["text/csv"] = {
    "schema": {"type": "string"}
}
PUBLIC_PATHS = {
    "/v1/products/{product}/dongle-revocations": {
        "get": operation("Signed list of revoked dongle serials", ok={"200": DongleRevocations}, params=("product",),
                         refusals=(ValidationFailed, ServiceUnavailable))
    }
}
PUBLIC_PATHS["/v1/products/{product}/dongle-revocations"]["get"]["parameters"][0]["schema"] = {
    "type": "string",
    "pattern": PRODUCT_CODE_PATTERN,
}
