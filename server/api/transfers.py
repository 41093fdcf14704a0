"""Host-ID transfers: a named contact asks (customer API or `tessera-agent transfer-request`), support decides."""

from __future__ import annotations

import functools

from aiohttp import web

from server.api.auth import now, only_query, principal, query_choice, run
from server.api.context import SERVICES, client_address
from server.api.openapi import bearer_op
from server.api.paging import AT, ID, PAGE_PARAMETERS, PAGE_QUERY, page_response, read_page
from server.api.problems import read_model
from server.api.schemas import Transfer, TransferDecided, TransferPage, answer
from server.domain.errors import (
    ActivationEnded,
    ActivationNotFound,
    ActivationRequired,
    Conflict,
    FingerprintTooWeak,
    InvalidAgentKey,
    InvalidCursor,
    LicenceNotFound,
    NamedContactRequired,
    NotFound,
    QuotaExhausted,
    RoleForbidden,
    SeatsExhausted,
    TooManyAttempts,
    TransferAlreadyDecided,
    TransferPending,
    WrongBindingModel,
)
from server.services import transfers
from server.services.requests import DecisionBody, DenyBody, TransferRequestBody

routes = web.RouteTableDef()
STATES = ("pending", "approved", "denied")


@routes.get("/v1/transfers")
async def list_transfers(request: web.Request) -> web.Response:
    only_query(request, "state", *PAGE_QUERY)
    page = read_page(request, "transfers", AT + ID)
    state = query_choice(request, "state", STATES)
    return page_response(
        request, "transfers", page, await run(request, transfers.transfers_page, state, now(), page), TransferPage
    )


@routes.post("/v1/transfers")
async def request_transfer(request: web.Request) -> web.Response:
    body = await read_model(request, TransferRequestBody)
    who = await principal(request)
    result = await transfers.ask_for_transfer(request.app[SERVICES].db, who, body, client_address(request), now())
    return answer(Transfer, result, 201)


@routes.post("/v1/transfers/{transfer_id}/approve")
async def approve(request: web.Request) -> web.Response:
    body = await read_model(request, DecisionBody)
    unit = functools.partial(transfers.decide_transfer, waive_reason=body.waive_reason)
    result = await run(request, unit, request.match_info["transfer_id"], True, body.note, now())
    return answer(TransferDecided, result)


@routes.post("/v1/transfers/{transfer_id}/deny")
async def deny(request: web.Request) -> web.Response:
    body = await read_model(request, DenyBody)
    result = await run(request, transfers.decide_transfer, request.match_info["transfer_id"], False, body.note, now())
    return answer(TransferDecided, result)


TRANSFER = ("transfer_id",)
# One service decides both ways: approving ends the old seat and takes a new one, priced by the quota.
DECISION = (RoleForbidden, NotFound, LicenceNotFound, TransferAlreadyDecided, QuotaExhausted, SeatsExhausted,
            ActivationEnded)  # fmt: skip
PATHS = {
    "/v1/transfers": {
        "get": bearer_op(
            "Transfer requests the caller may see, oldest first",
            answers=TransferPage,
            query={"state": {"type": "string", "enum": list(STATES)}, **PAGE_PARAMETERS},
            refusals=(RoleForbidden, InvalidCursor),
        ),
        "post": bearer_op(
            "Request a host-ID transfer (a named contact)", answers=Transfer, body="TransferRequestBody", ok="201",
            refusals=(RoleForbidden, NamedContactRequired, NotFound, LicenceNotFound, ActivationNotFound,
                      ActivationRequired, ActivationEnded, WrongBindingModel, TransferPending, Conflict,
                      TooManyAttempts, InvalidAgentKey, FingerprintTooWeak),
        ),
    },
    "/v1/transfers/{transfer_id}/approve": {
        "post": bearer_op(
            "Approve (support); `waive_reason` waives the charge or grants one extra free change",
            answers=TransferDecided,
            body="DecisionBody",
            params=TRANSFER,
            refusals=DECISION,
        )
    },
    "/v1/transfers/{transfer_id}/deny": {
        "post": bearer_op("Deny with a reason (support)", answers=TransferDecided, body="DenyBody", params=TRANSFER,
                          refusals=DECISION)
    },
}  # fmt: skip
