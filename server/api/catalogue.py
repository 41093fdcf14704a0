"""The vendor's catalogue and accounts over HTTP: products and their releases, plans, resellers, customers and
API tokens, each listed (a page), shown, updated and disabled. Staff read the catalogue, admins change it; a
reseller lists and reads its own customers (another reseller's is a 404) and itself."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.api.auth import now, only_query, run
from server.api.openapi import Refusal, bearer_op
from server.api.paging import AT, DAY, ID, PAGE_PARAMETERS, PAGE_QUERY, page_response, read_page
from server.api.problems import read_model
from server.api.schemas import (
    Answer,
    ApiToken,
    ApiTokenPage,
    Customer,
    CustomerPage,
    CustomerShown,
    Plan,
    PlanPage,
    Product,
    ProductPage,
    ProductShown,
    Release,
    ReleasePage,
    Reseller,
    ResellerPage,
    ResellerShown,
    answer,
)
from server.domain.errors import Conflict, InvalidCursor, NotFound, RoleForbidden
from server.services import catalogue
from server.services.requests import (
    CustomerBody,
    ProductBody,
    ReleaseBody,
    ReleaseUpdateBody,
    RenameBody,
    TokenUpdateBody,
)

routes = web.RouteTableDef()


async def _page(request: web.Request, listing: str, model: type[Answer], unit: Any, *args: Any,
                shape: str = AT + ID) -> web.Response:  # fmt: skip
    only_query(request, *PAGE_QUERY)
    page = read_page(request, listing, shape)
    return page_response(request, listing, page, await run(request, unit, *args, page), model)


def _switch(unit: Any, key: str, disabled: bool, model: type[Answer]) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return answer(model, await run(request, unit, request.match_info[key], disabled, now()))

    return handler


async def _renamed(request: web.Request, unit: Any, key: str, model: type[Answer]) -> web.Response:
    body = await read_model(request, RenameBody)
    return answer(model, await run(request, unit, request.match_info[key], body.name, now()))


# -- products and releases


@routes.get("/v1/products")
async def list_products(request: web.Request) -> web.Response:
    return await _page(request, "products", ProductPage, catalogue.products_page)


@routes.post("/v1/products")
async def add_product(request: web.Request) -> web.Response:
    body = await read_model(request, ProductBody)
    return answer(Product, await run(request, catalogue.add_product, body.code, body.name, now()), 201)


@routes.get("/v1/products/{product}")
async def show_product(request: web.Request) -> web.Response:
    return answer(ProductShown, await run(request, catalogue.show_product, request.match_info["product"]))


@routes.patch("/v1/products/{product}")
async def update_product(request: web.Request) -> web.Response:
    return await _renamed(request, catalogue.update_product, "product", Product)


routes.post("/v1/products/{product}/disable")(_switch(catalogue.disable_product, "product", True, Product))
routes.post("/v1/products/{product}/enable")(_switch(catalogue.disable_product, "product", False, Product))


@routes.get("/v1/products/{product}/releases")
async def list_releases(request: web.Request) -> web.Response:
    product = request.match_info["product"]
    return await _page(request, f"releases:{product}", ReleasePage, catalogue.releases_page, product, shape=DAY + ID)


@routes.post("/v1/products/{product}/releases")
async def add_release(request: web.Request) -> web.Response:
    body = await read_model(request, ReleaseBody)
    product = request.match_info["product"]
    made = await run(request, catalogue.add_release, product, body.version, body.released, body.end_of_support, now())
    return answer(Release, made, 201)


@routes.get("/v1/products/{product}/releases/{version}")
async def show_release(request: web.Request) -> web.Response:
    product, version = request.match_info["product"], request.match_info["version"]
    return answer(Release, await run(request, catalogue.show_release, product, version))


@routes.patch("/v1/products/{product}/releases/{version}")
async def update_release(request: web.Request) -> web.Response:
    body = await read_model(request, ReleaseUpdateBody)
    changes = body.model_dump(exclude_unset=True)
    product, version = request.match_info["product"], request.match_info["version"]
    return answer(Release, await run(request, catalogue.update_release, product, version, changes, now()))


# -- plans (updated by PATCH /v1/plans/{plan}, disabled by POST /v1/plans/{plan}/retirement: server.api.licences)


@routes.get("/v1/plans")
async def list_plans(request: web.Request) -> web.Response:
    return await _page(request, "plans", PlanPage, catalogue.plans_page)


@routes.get("/v1/plans/{plan}")
async def show_plan(request: web.Request) -> web.Response:
    return answer(Plan, await run(request, catalogue.show_plan, request.match_info["plan"]))


# -- resellers and customers


@routes.get("/v1/resellers")
async def list_resellers(request: web.Request) -> web.Response:
    return await _page(request, "resellers", ResellerPage, catalogue.resellers_page)


@routes.post("/v1/resellers")
async def add_reseller(request: web.Request) -> web.Response:
    body = await read_model(request, RenameBody)
    return answer(Reseller, await run(request, catalogue.add_reseller, body.name, now()), 201)


@routes.get("/v1/resellers/{reseller_id}")
async def show_reseller(request: web.Request) -> web.Response:
    return answer(ResellerShown, await run(request, catalogue.show_reseller, request.match_info["reseller_id"]))


@routes.patch("/v1/resellers/{reseller_id}")
async def update_reseller(request: web.Request) -> web.Response:
    return await _renamed(request, catalogue.update_reseller, "reseller_id", Reseller)


routes.post("/v1/resellers/{reseller_id}/disable")(_switch(catalogue.disable_reseller, "reseller_id", True, Reseller))
routes.post("/v1/resellers/{reseller_id}/enable")(_switch(catalogue.disable_reseller, "reseller_id", False, Reseller))


@routes.get("/v1/customers")
async def list_customers(request: web.Request) -> web.Response:
    return await _page(request, "customers", CustomerPage, catalogue.customers_page)


@routes.post("/v1/customers")
async def add_customer(request: web.Request) -> web.Response:
    body = await read_model(request, CustomerBody)
    return answer(Customer, await run(request, catalogue.add_customer, body.name, body.reseller_id, now()), 201)


@routes.get("/v1/customers/{customer_id}")
async def show_customer(request: web.Request) -> web.Response:
    return answer(CustomerShown, await run(request, catalogue.show_customer, request.match_info["customer_id"]))


@routes.patch("/v1/customers/{customer_id}")
async def update_customer(request: web.Request) -> web.Response:
    return await _renamed(request, catalogue.update_customer, "customer_id", Customer)


routes.post("/v1/customers/{customer_id}/disable")(_switch(catalogue.disable_customer, "customer_id", True, Customer))
routes.post("/v1/customers/{customer_id}/enable")(_switch(catalogue.disable_customer, "customer_id", False, Customer))


# -- API tokens


@routes.get("/v1/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    return await _page(request, "tokens", ApiTokenPage, catalogue.tokens_page)


@routes.get("/v1/tokens/{token_id}")
async def show_token(request: web.Request) -> web.Response:
    return answer(ApiToken, await run(request, catalogue.show_token, request.match_info["token_id"]))


@routes.patch("/v1/tokens/{token_id}")
async def update_token(request: web.Request) -> web.Response:
    body = await read_model(request, TokenUpdateBody)
    result = await run(request, catalogue.update_token, request.match_info["token_id"], body.label, now())
    return answer(ApiToken, result)


@routes.delete("/v1/tokens/{token_id}")
async def revoke_token(request: web.Request) -> web.Response:
    return answer(ApiToken, await run(request, catalogue.revoke_token, request.match_info["token_id"], now()))


READ = (RoleForbidden,)
SHOW = (RoleForbidden, NotFound)
CHANGE = (RoleForbidden, NotFound, Conflict)


def _listed(summary: str, model: type[Answer], refusals: tuple[Refusal, ...] = READ, **extra: Any) -> dict[str, Any]:
    return bearer_op(summary, answers=model, query=PAGE_PARAMETERS, refusals=(*refusals, InvalidCursor), **extra)


def _switches(path: str, what: str, params: tuple[str, ...], model: type[Answer]) -> dict[str, dict[str, Any]]:
    return {
        f"{path}/disable": {"post": bearer_op(f"Disable the {what}: no new licences, existing ones run on (admin)",
                                              answers=model, params=params, refusals=CHANGE)},
        f"{path}/enable": {"post": bearer_op(f"Enable the {what} again (admin)", answers=model, params=params,
                                             refusals=CHANGE)},
    }  # fmt: skip


PRODUCT, RELEASE, PLAN = ("product",), ("product", "version"), ("plan",)
RESELLER, CUSTOMER, TOKEN = ("reseller_id",), ("customer_id",), ("token_id",)
PATHS = {
    "/v1/products": {
        "get": _listed("Products, oldest first (admin, support)", ProductPage),
        "post": bearer_op("Add a product (admin)", answers=Product, body="ProductBody", ok="201", refusals=CHANGE),
    },
    "/v1/products/{product}": {
        "get": bearer_op("A product, its releases and how many licences it has (admin, support)",
                         answers=ProductShown, params=PRODUCT, refusals=SHOW),
        "patch": bearer_op("Rename a product; its code never changes (admin)", answers=Product, body="RenameBody",
                           params=PRODUCT, refusals=CHANGE),
    },
    **_switches("/v1/products/{product}", "product", PRODUCT, Product),
    "/v1/products/{product}/releases": {
        "get": _listed("A product's releases, oldest first (admin, support)", ReleasePage, SHOW, params=PRODUCT),
        "post": bearer_op("Add a release of the product (admin)", answers=Release, body="ReleaseBody", ok="201",
                          params=PRODUCT, refusals=CHANGE),
    },
    "/v1/products/{product}/releases/{version}": {
        "get": bearer_op("A release (admin, support)", answers=Release, params=RELEASE, refusals=SHOW),
        "patch": bearer_op("A release's dates (admin)", answers=Release, body="ReleaseUpdateBody", params=RELEASE,
                           refusals=CHANGE),
    },
    "/v1/plans": {"get": _listed("Plans, oldest first, retired ones included (admin, support)", PlanPage)},
    "/v1/resellers": {
        "get": _listed("Resellers, oldest first (admin, support)", ResellerPage),
        "post": bearer_op("Add a reseller (admin)", answers=Reseller, body="RenameBody", ok="201", refusals=CHANGE),
    },
    "/v1/resellers/{reseller_id}": {
        "get": bearer_op("A reseller (admin, support, the reseller itself)", answers=ResellerShown, params=RESELLER,
                         refusals=SHOW),
        "patch": bearer_op("Rename a reseller (admin)", answers=Reseller, body="RenameBody", params=RESELLER,
                           refusals=CHANGE),
    },
    **_switches("/v1/resellers/{reseller_id}", "reseller", RESELLER, Reseller),
    "/v1/customers": {
        "get": _listed("Customers, oldest first (admin, support; a reseller: its own)", CustomerPage),
        "post": bearer_op("Add a customer, sold to by a reseller or the vendor (admin)", answers=Customer,
                          body="CustomerBody", ok="201", refusals=CHANGE),
    },
    "/v1/customers/{customer_id}": {
        "get": bearer_op("A customer (admin, support, its reseller)", answers=CustomerShown, params=CUSTOMER,
                         refusals=SHOW),
        "patch": bearer_op("Rename a customer (admin)", answers=Customer, body="RenameBody", params=CUSTOMER,
                           refusals=CHANGE),
    },
    **_switches("/v1/customers/{customer_id}", "customer", CUSTOMER, Customer),
    "/v1/tokens": {
        "get": _listed("API tokens, oldest first, revoked ones included; never the token (admin)", ApiTokenPage)
    },
    "/v1/tokens/{token_id}": {
        "get": bearer_op("An API token's role, owner, label and state (admin)", answers=ApiToken, params=TOKEN,
                         refusals=SHOW),
        "patch": bearer_op("Relabel an API token (admin)", answers=ApiToken, body="TokenUpdateBody", params=TOKEN,
                           refusals=SHOW),
        "delete": bearer_op("Revoke an API token: it authenticates no more (admin)", answers=ApiToken, params=TOKEN,
                            refusals=CHANGE),
    },
}  # fmt: skip
# GET /v1/plans/{plan} joins the PATCH of server.api.licences under one path.
PLAN_SHOW = {"get": bearer_op("A plan's settings (admin, support)", answers=Plan, params=PLAN, refusals=SHOW)}
