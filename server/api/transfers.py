"""Host-ID transfers: a named contact asks (customer API or `tessera-agent transfer-request`), support decides."""

from __future__ import annotations

import functools

from aiohttp import web

from server.api.auth import now, only_query, principal, query_choice, run
from server.api.context import SERVICES, client_address
from server.api.openapi import bearer_op
from server.api.paging import AT, ID, PAGE_PARAMETERS, PAGE_QUERY, page_response, page_schema, read_page
from server.api.problems import json_response, read_model
from server.services import transfers
from server.services.requests import DecisionBody, DenyBody, TransferRequestBody

routes = web.RouteTableDef()
STATES = ("pending", "approved", "denied")


@routes.get("/v1/transfers")
async def list_transfers(request: web.Request) -> web.Response:
    only_query(request, "state", *PAGE_QUERY)
    page = read_page(request, "transfers", AT + ID)
    state = query_choice(request, "state", STATES)
    return page_response(request, "transfers", page, await run(request, transfers.transfers_page, state, now(), page))


@routes.post("/v1/transfers")
async def request_transfer(request: web.Request) -> web.Response:
    body = await read_model(request, TransferRequestBody)
    who = await principal(request)
    result = await transfers.ask_for_transfer(request.app[SERVICES].db, who, body, client_address(request), now())
    return json_response(result, status=201)


@routes.post("/v1/transfers/{transfer_id}/approve")
async def approve(request: web.Request) -> web.Response:
    body = await read_model(request, DecisionBody)
    unit = functools.partial(transfers.decide_transfer, waive_reason=body.waive_reason)
    result = await run(request, unit, request.match_info["transfer_id"], True, body.note, now())
    return json_response(result)


@routes.post("/v1/transfers/{transfer_id}/deny")
async def deny(request: web.Request) -> web.Response:
    body = await read_model(request, DenyBody)
    result = await run(request, transfers.decide_transfer, request.match_info["transfer_id"], False, body.note, now())
    return json_response(result)


TRANSFER = ("transfer_id",)
PATHS = {
    "/v1/transfers": {
        "get": bearer_op(
            "Transfer requests the caller may see, oldest first",
            ok_schema=page_schema(),
            query={"state": {"type": "string", "enum": list(STATES)}, **PAGE_PARAMETERS},
        ),
        "post": bearer_op("Request a host-ID transfer (a named contact)", body="TransferRequestBody", ok="201"),
    },
    "/v1/transfers/{transfer_id}/approve": {
        "post": bearer_op(
            "Approve (support); `waive_reason` waives the charge or grants one extra free change",
            body="DecisionBody",
            params=TRANSFER,
        )
    },
    "/v1/transfers/{transfer_id}/deny": {
        "post": bearer_op("Deny with a reason (support)", body="DenyBody", params=TRANSFER)
    },
}
