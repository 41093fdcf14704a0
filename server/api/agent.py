"""The agent's API: activate, refresh, deactivate, offline exchange, JWKS (docs/PROTOCOL.md)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from server.api.context import METRICS, SERVICES, SIGNER, client_address
from server.api.problems import json_response, read_model
from server.services.requests import ActivationRequest, SignedProof, SignedRequest
from server.signing import SeatGrant

routes = web.RouteTableDef()


def utcnow() -> datetime:
    return datetime.now(UTC)


def _granted(request: web.Request, grant: SeatGrant) -> web.Response:
    token = request.app[SIGNER].sign(grant)
    request.app[METRICS].tokens_signed.inc()
    return json_response(
        {
            "activation_id": grant.activation_id,
            "licence_id": grant.licence_id,
            "token": token,
            "expires_at": grant.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        status=201 if grant.created else 200,
    )


@routes.post("/v1/activations")
async def create_activation(request: web.Request) -> web.Response:
    body = await read_model(request, ActivationRequest)
    outcome = "error"
    try:
        grant = await request.app[SERVICES].activations.activate(body, address=client_address(request), now=utcnow())
        outcome = "created" if grant.created else "existing"
    finally:
        request.app[METRICS].count_activation(outcome)
    return _granted(request, grant)


@routes.post("/v1/activations/{activation_id}/refresh")
async def refresh_activation(request: web.Request) -> web.Response:
    body = await read_model(request, SignedProof)
    grant = await request.app[SERVICES].activations.refresh(
        request.match_info["activation_id"], body.proof, now=utcnow()
    )
    return _granted(request, grant)


@routes.post("/v1/activations/{activation_id}/deactivate")
async def deactivate_activation(request: web.Request) -> web.Response:
    body = await read_model(request, SignedProof)
    ended = await request.app[SERVICES].activations.deactivate(
        request.match_info["activation_id"], body.proof, now=utcnow()
    )
    return json_response({"activation_id": ended.activation_id, "ended_at": ended.ended_at.isoformat()})


@routes.post("/v1/offline/activations")
async def offline_activation(request: web.Request) -> web.Response:
    body = await read_model(request, SignedRequest)
    grant = await request.app[SERVICES].activations.activate_offline(
        body.request, address=client_address(request), now=utcnow()
    )
    return _granted(request, grant)


@routes.post("/v1/offline/deactivations")
async def offline_deactivation(request: web.Request) -> web.Response:
    body = await read_model(request, SignedProof)
    ended = await request.app[SERVICES].activations.deactivate_offline(body.proof, now=utcnow())
    return json_response({"activation_id": ended.activation_id, "ended_at": ended.ended_at.isoformat()})
