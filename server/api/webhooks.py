"""Webhook endpoints and the delivery log (admins and resellers), and a person's notification opt-outs."""

from __future__ import annotations

from functools import partial
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from server.api.auth import now, only_query, query_choice, run
from server.api.context import SETTINGS
from server.api.openapi import bearer_op
from server.api.paging import AT, ID, PAGE_PARAMETERS, PAGE_QUERY, page_response, read_page
from server.api.problems import read_model
from server.api.schemas import (
    Delivery,
    DeliveryPage,
    DeliveryShown,
    Endpoint,
    EndpointPage,
    EndpointSecret,
    OptOuts,
    answer,
)
from server.domain.errors import Conflict, InvalidCursor, NotFound, RoleForbidden
from server.notify.events import EVENTS
from server.services import webhooks
from server.services.webhooks import DELIVERY_STATES

routes = web.RouteTableDef()


WEBHOOK_EVENTS = [name for name, event in EVENTS.items() if event.webhooks]
# http(s), a host, an optional port and path; no credentials (the service checks the rest, e.g. a reseller's https).
WEBHOOK_URL = r"^https?://[A-Za-z0-9._~-]+(:[0-9]{1,5})?(/[!-~]*)?$"


class EndpointBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(min_length=8, max_length=2000, pattern=WEBHOOK_URL)
    events: list[str] = Field(default_factory=list, max_length=50,
                              json_schema_extra={"items": {"type": "string", "enum": WEBHOOK_EVENTS}})  # fmt: skip
    description: str = Field(default="", max_length=200)


class OptOutBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    opt_out: list[str] = Field(max_length=50)


@routes.post("/v1/webhooks")
async def add_endpoint(request: web.Request) -> web.Response:
    body = await read_model(request, EndpointBody)
    private = request.app[SETTINGS].webhook_private_targets
    result = await run(request, partial(webhooks.add_endpoint, private_targets=private), body.url, body.events,
                       body.description, now())  # fmt: skip
    return answer(EndpointSecret, result, 201)


@routes.get("/v1/webhooks")
async def list_endpoints(request: web.Request) -> web.Response:
    only_query(request, *PAGE_QUERY)
    page = read_page(request, "webhooks", AT + ID)
    return page_response(request, "webhooks", page, await run(request, webhooks.endpoints_page, now(), page),
                         EndpointPage)  # fmt: skip


@routes.delete("/v1/webhooks/{endpoint_id}")
async def remove_endpoint(request: web.Request) -> web.Response:
    return answer(Endpoint, await run(request, webhooks.remove_endpoint, request.match_info["endpoint_id"], now()))


@routes.post("/v1/webhooks/{endpoint_id}/rotate-secret")
async def rotate_secret(request: web.Request) -> web.Response:
    overlap = request.app[SETTINGS].webhook_secret_overlap
    result = await run(request, webhooks.rotate_secret, request.match_info["endpoint_id"], overlap, now())
    return answer(EndpointSecret, result)


@routes.get("/v1/webhooks/{endpoint_id}/deliveries")
async def endpoint_deliveries(request: web.Request) -> web.Response:
    only_query(request, "state", *PAGE_QUERY)
    state = query_choice(request, "state", DELIVERY_STATES)
    listing = f"deliveries:{request.match_info['endpoint_id']}"
    page = read_page(request, listing, AT + ID)
    shown = await run(request, webhooks.deliveries_page, request.match_info["endpoint_id"], state, page)
    return page_response(request, listing, page, shown, DeliveryPage)


@routes.get("/v1/deliveries")
async def deliveries(request: web.Request) -> web.Response:
    only_query(request, "state", *PAGE_QUERY)
    state = query_choice(request, "state", DELIVERY_STATES)
    page = read_page(request, "deliveries", AT + ID)
    shown = await run(request, webhooks.deliveries_page, None, state, page)
    return page_response(request, "deliveries", page, shown, DeliveryPage)


@routes.get("/v1/deliveries/{delivery_id}")
async def show_delivery(request: web.Request) -> web.Response:
    return answer(DeliveryShown, await run(request, webhooks.show_delivery, request.match_info["delivery_id"]))


@routes.post("/v1/deliveries/{delivery_id}/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    return answer(Delivery, await run(request, webhooks.redeliver, request.match_info["delivery_id"], now()))


@routes.get("/v1/notifications/opt-outs")
async def opt_outs(request: web.Request) -> web.Response:
    return answer(OptOuts, await run(request, webhooks.opt_outs))


@routes.put("/v1/notifications/opt-outs")
async def set_opt_outs(request: web.Request) -> web.Response:
    body = await read_model(request, OptOutBody)
    return answer(OptOuts, await run(request, webhooks.set_opt_outs, body.opt_out, now()))


ENDPOINT = ("endpoint_id",)
DELIVERY = ("delivery_id",)
_STATE: dict[str, dict[str, Any]] = {
    "state": {"type": "string", "enum": list(DELIVERY_STATES)},
    **PAGE_PARAMETERS,
}
MANAGE = (RoleForbidden, NotFound)
PATHS = {
    "/v1/webhooks": {
        "get": bearer_op("Webhook endpoints, oldest first (admins: all; resellers: their own)", answers=EndpointPage,
                         query=PAGE_PARAMETERS, refusals=(RoleForbidden, InvalidCursor)),
        "post": bearer_op("Register an endpoint; the whsec_ secret is shown once", answers=EndpointSecret,
                          body="EndpointBody", ok="201", refusals=(*MANAGE, Conflict)),
    },
    "/v1/webhooks/{endpoint_id}": {
        "delete": bearer_op("Remove an endpoint", answers=Endpoint, params=ENDPOINT, refusals=MANAGE)
    },
    "/v1/webhooks/{endpoint_id}/rotate-secret": {
        "post": bearer_op("New secret; the previous one keeps signing for the overlap", answers=EndpointSecret,
                          params=ENDPOINT, refusals=MANAGE)
    },
    "/v1/webhooks/{endpoint_id}/deliveries": {
        "get": bearer_op("An endpoint's delivery log, newest first", answers=DeliveryPage, params=ENDPOINT,
                         query=_STATE, refusals=(*MANAGE, InvalidCursor))
    },
    "/v1/deliveries": {
        "get": bearer_op("Every delivery, newest first, e-mail included (admins); dead letters with state=dead",
                         answers=DeliveryPage, query=_STATE, refusals=(*MANAGE, InvalidCursor))
    },
    "/v1/deliveries/{delivery_id}": {
        "get": bearer_op("One delivery and its attempts", answers=DeliveryShown, params=DELIVERY, refusals=MANAGE)
    },
    "/v1/deliveries/{delivery_id}/redeliver": {
        "post": bearer_op("Send again, same event id", answers=Delivery, params=DELIVERY, refusals=(*MANAGE, Conflict))
    },
    "/v1/notifications/opt-outs": {
        "get": bearer_op("The caller's notification opt-outs", answers=OptOuts, refusals=MANAGE),
        "put": bearer_op("Replace the caller's opt-outs ('*': every notice that is not essential)", answers=OptOuts,
                         body="OptOutBody", refusals=MANAGE),
    },
}  # fmt: skip
