"""Operations endpoints: JWKS, health, readiness, metrics, OpenAPI, and the benchmark baseline."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Connection, text

from server.api.context import KEYRING, METRICS, SERVICES, SETTINGS, SIGNER
from server.api.problems import json_response, problem_response
from server.db.database import DatabaseUnavailable
from server.services.requests import ActivationRequest, SignedProof, SignedRequest

routes = web.RouteTableDef()


@routes.get("/.well-known/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    response = json_response(request.app[KEYRING].jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def _ping(conn: Connection) -> int:
    return int(conn.execute(text("SELECT 1")).scalar_one())


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[SERVICES].db.run(_ping)
    except (DatabaseUnavailable, OSError) as exc:
        return problem_response(503, "service-unavailable", "Not ready", f"database: {exc}")
    return json_response({"status": "ready", "signing_kid": request.app[SIGNER].kid})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def bench_echo(request: web.Request) -> web.Response:
    """The baseline `make bench` compares against: same app, same middlewares, no work."""
    return web.Response(body=await request.read(), content_type="application/json")


def _problem_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
        },
    }


def openapi_document(server_url: str) -> dict[str, Any]:
    grant = {
        "type": "object",
        "required": ["activation_id", "licence_id", "token", "expires_at"],
        "properties": {k: {"type": "string"} for k in ("activation_id", "licence_id", "token", "expires_at")},
    }
    ended = {
        "type": "object",
        "properties": {"activation_id": {"type": "string"}, "ended_at": {"type": "string"}},
    }
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}

    def op(summary: str, body: str | None, ok: dict[str, Any], codes: dict[str, str]) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "summary": summary,
            "responses": {
                **{
                    status: {"description": "OK", "content": {"application/json": {"schema": ok}}}
                    for status in codes.get("ok", "200").split(",")
                },
                "default": {"description": "problem", "content": problem},
            },
        }
        if body:
            doc["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
            }
        return doc

    activation_path = {"name": "activation_id", "in": "path", "required": True, "schema": {"type": "string"}}
    schemas = {
        "ActivationRequest": ActivationRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
        "SignedProof": SignedProof.model_json_schema(),
        "SignedRequest": SignedRequest.model_json_schema(),
        "Problem": _problem_schema(),
    }
    schemas |= schemas["ActivationRequest"].pop("$defs", {})
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tessera licence server", "version": "1"},
        "servers": [{"url": server_url}],
        "paths": {
            "/v1/activations": {"post": op("Activate a seat", "ActivationRequest", grant, {"ok": "200,201"})},
            "/v1/activations/{activation_id}/refresh": {
                "post": {**op("Refresh a token", "SignedProof", grant, {}), "parameters": [activation_path]}
            },
            "/v1/activations/{activation_id}/deactivate": {
                "post": {**op("Free a seat", "SignedProof", ended, {}), "parameters": [activation_path]}
            },
            "/v1/offline/activations": {
                "post": op("Activate an air-gapped machine", "SignedRequest", grant, {"ok": "200,201"})
            },
            "/v1/offline/deactivations": {"post": op("Upload an offline deactivation", "SignedProof", ended, {})},
            "/.well-known/jwks.json": {"get": op("Public signing keys", None, {"type": "object"}, {})},
            "/healthz": {"get": op("Liveness", None, {"type": "object"}, {})},
            "/readyz": {"get": op("Readiness", None, {"type": "object"}, {})},
        },
        "components": {"schemas": schemas},
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app[SETTINGS].public_url))
