"""Operations endpoints: JWKS, health, readiness, metrics, OpenAPI, and the benchmark baseline."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Connection, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from server.api import catalogue, customers, licences, transfers, webhooks
from server.api.auth import principal
from server.api.connections import CONNECTIONS, Connections
from server.api.context import IN_FLIGHT, KEYRING, METRICS, SERVICES, SETTINGS, SIGNER, InFlight
from server.api.openapi import RESPONSE_MODELS, Refusal, operation, refuses
from server.api.problems import problem_response
from server.api.schemas import ActivationToken, Answer, Health, Jwks, Readiness, SeatEnded, answer
from server.db.database import Database, DatabaseUnavailable
from server.db.models import Licence, Product
from server.domain.access import ADMIN
from server.domain.errors import (
    ActivationEnded,
    ActivationNotFound,
    ActivationRebound,
    Conflict,
    DongleRequired,
    DongleRevoked,
    FingerprintTooWeak,
    InvalidAgentKey,
    InvalidSignature,
    LicenceEnded,
    LicenceExpired,
    LicenceNotFound,
    LicenceRevoked,
    LicenceSuspended,
    QuotaExhausted,
    ReplayedRequest,
    RoleForbidden,
    SeatsExhausted,
    ServiceUnavailable,
    StaleRequest,
    TooManyAttempts,
    TransferRequired,
    VirtualMachineRefused,
    WrongBindingModel,
)
from server.services.requests import (
    ActivationRequest,
    CancellationBody,
    ContactsBody,
    CustomerBody,
    DecisionBody,
    DenyBody,
    DongleReplacementBody,
    IssueLicenceBody,
    LicenceChangeBody,
    LicenceEndBody,
    LicenceStatusBody,
    MachineLabelBody,
    NewUserBody,
    PlanUpdateBody,
    PriceBody,
    ProductBody,
    ReleaseBody,
    ReleaseUpdateBody,
    RenameBody,
    RenewalBody,
    SignedProof,
    SignedRequest,
    TokenUpdateBody,
    TransferRequestBody,
)

BEARER_BODIES = (
    CancellationBody, ContactsBody, DecisionBody, DenyBody, DongleReplacementBody, IssueLicenceBody,
    LicenceChangeBody, LicenceEndBody, LicenceStatusBody, MachineLabelBody, NewUserBody, PlanUpdateBody, PriceBody,
    RenewalBody, TransferRequestBody, webhooks.EndpointBody, webhooks.OptOutBody, RenameBody, ReleaseUpdateBody,
    TokenUpdateBody,
    ProductBody, ReleaseBody, CustomerBody,
)  # fmt: skip

routes = web.RouteTableDef()
log = logging.getLogger("tessera.metrics")


@routes.get("/.well-known/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    response = answer(Jwks, request.app[KEYRING].jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return answer(Health, {"status": "ok"})


def _ping(conn: Connection) -> int:
    return int(conn.execute(text("SELECT 1")).scalar_one())


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready to serve: the database answers and a signing key is loaded (else 503, and the balancer skips us)."""
    signer = request.app.get(SIGNER)
    if signer is None:
        return problem_response(503, "not-ready", "Not ready", "no signing key is loaded")
    try:
        await request.app[SERVICES].db.run(_ping)
    except (DatabaseUnavailable, OSError, SQLAlchemyError) as exc:
        return problem_response(503, "not-ready", "Not ready", f"the database does not answer: {type(exc).__name__}")
    return answer(Readiness, {"status": "ready", "signing_kid": signer.kid})


SEATS_CACHE_SECONDS = 5.0


def _seats_by_product(conn: Connection) -> list[tuple[str, int, int]]:
    rows = conn.execute(
        select(Product.code, func.sum(Licence.seats_in_use), func.sum(Licence.seats))
        .join(Licence, Licence.product_id == Product.id)
        .where(Licence.status == "active")
        .group_by(Product.code)
    )
    return [(code, int(in_use or 0), int(seats or 0)) for code, in_use, seats in rows]


class LiveCollector(Collector):
    """Gauges read at scrape time: seats from the database (cached briefly), the pool from this process."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.seats: list[tuple[str, int, int]] = []
        self.seats_read_at = -math.inf

    async def refresh(self) -> None:
        if time.monotonic() - self.seats_read_at >= SEATS_CACHE_SECONDS:
            self.seats = await self.db.run(_seats_by_product)
            self.seats_read_at = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        in_use = GaugeMetricFamily(
            "tessera_seats_in_use", "Seats in use on active licences, per product", labels=["product"]
        )
        capacity = GaugeMetricFamily("tessera_seats", "Seats sold on active licences, per product", labels=["product"])
        for product, used, seats in self.seats:
            in_use.add_metric([product], used)
            capacity.add_metric([product], seats)
        yield in_use
        yield capacity
        for name, value in self.db.stats().items():
            yield GaugeMetricFamily(f"tessera_db_{name}", _DB_HELP[name], value=value)


_DB_HELP = {
    "pool_size": "PostgreSQL connection pool size (this process)",
    "pool_checked_out": "PostgreSQL connections in use (this process)",
    "pool_overflow": "PostgreSQL connections open beyond the pool size (this process)",
    "writer_queue_depth": "SQLite units of work waiting for the writer thread (this process)",
}
LIVE = web.AppKey("live_metrics", LiveCollector)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """On the public port /metrics needs an admin token: it lists every product's seats sold and in use, and a
    scrape costs a database read, so anonymous scrapes were both a leak and a lever (`metrics_listen` is the
    tokenless alternative, on an address of the operator's choosing)."""
    who = await principal(request)
    if who.role not in METRICS_READERS:
        raise RoleForbidden(f"the {who.role} role may not read metrics", action="metrics:read", role=who.role)
    return await exposition(request.app)


METRICS_READERS = frozenset({ADMIN})


async def exposition(app: web.Application) -> web.Response:
    live = app[LIVE]
    try:
        await live.refresh()
    except (DatabaseUnavailable, OSError, SQLAlchemyError) as exc:
        log.warning("metrics: cannot read seats from the database: %s", type(exc).__name__)
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # every worker's counters, summed
    else:
        registry.register(_Own(app[METRICS].registry))
    registry.register(live)
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def metrics_app(main: web.Application) -> web.Application:
    """The `metrics_listen` listener's app: GET /metrics without a token, and nothing else (404 problems).

    Whoever can reach the address may scrape: bind it to loopback or a management network only.
    """

    async def scrape(request: web.Request) -> web.Response:
        return await exposition(main)

    settings = main[SETTINGS]
    app = web.Application()  # its listener puts the front (server.api.front) before it, as the main one's
    app[SETTINGS] = settings
    app[METRICS] = main[METRICS]
    app[IN_FLIGHT] = InFlight()
    # Its own connections, limits and clocks: a flood on the public port does not starve the scraper.
    app[CONNECTIONS] = Connections.from_settings(settings, limit=64, on_close=main[METRICS].count_close)
    app.router.add_get("/metrics", scrape)
    return app


class _Own(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        return self.registry.collect()


async def bench_echo(request: web.Request) -> web.Response:
    """The baseline `make bench` compares against: same app, same front, no work."""
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


def _label(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every operation gets a stable operationId (method and path), a tag (the path's first segment after
    the version) and an explicit security requirement (none for the public and agent-signed operations). Any
    write may meet another inserting the same row at the same moment: a 409 `conflict` (server.api.problems)."""
    for path, methods in paths.items():
        words = [w.strip("{}").replace("-", "_").replace(".", "") for w in path.strip("/").split("/") if w]
        tag = next((w for w in words if w not in ("v1", "well_known")), "ops")
        for method, op in methods.items():
            op.setdefault("operationId", "_".join([method, *words]))
            op.setdefault("tags", [tag])
            op.setdefault("security", [])
            if method != "get":
                refuses(op, Conflict)
    return paths


# What the agent's operations refuse (server.services.activation): a signed proof that does not verify, a seat
# that ended or moved to another key, a licence that does not run, and the failed-key throttle. Activating
# may move the seat of a replaced machine, which the release quota and binding model may refuse.
PROOF = (InvalidSignature, StaleRequest, ReplayedRequest, ActivationNotFound, ActivationEnded, ActivationRebound)
LICENCE_STATE = (LicenceSuspended, LicenceRevoked, LicenceExpired, LicenceEnded)
RELEASE = (QuotaExhausted, WrongBindingModel, ActivationEnded)
ACTIVATE = (
    LicenceNotFound, *LICENCE_STATE, SeatsExhausted, TransferRequired, DongleRequired, DongleRevoked,
    VirtualMachineRefused, FingerprintTooWeak, InvalidAgentKey, TooManyAttempts, ActivationRebound, InvalidSignature,
    StaleRequest, ReplayedRequest, *RELEASE, ServiceUnavailable,
)  # fmt: skip
REFRESH = (*PROOF, *LICENCE_STATE, DongleRevoked, TransferRequired, FingerprintTooWeak, ServiceUnavailable)
DEACTIVATE = (*PROOF, QuotaExhausted, WrongBindingModel, ServiceUnavailable)


def _agent_op(summary: str, body: str, ok: type[Answer], refusals: tuple[Refusal, ...], statuses: str = "200",
              *, path: bool = False) -> dict[str, Any]:  # fmt: skip
    op = operation(summary, ok={status: ok for status in statuses.split(",")}, body=body, refusals=refusals)
    if path:
        op["parameters"] = [{"name": "activation_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    return op


def openapi_document(server_url: str) -> dict[str, Any]:
    schemas = {
        "ActivationRequest": ActivationRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
        "SignedProof": SignedProof.model_json_schema(),
        "SignedRequest": SignedRequest.model_json_schema(),
        "Problem": _problem_schema(),
    }
    schemas |= schemas["ActivationRequest"].pop("$defs", {})
    for model in BEARER_BODIES:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas |= schema.pop("$defs", {})
        schemas[model.__name__] = schema
    paths = _label(
        {
            "/v1/activations": {
                "post": _agent_op("Activate a seat", "ActivationRequest", ActivationToken, ACTIVATE, "200,201")
            },
            "/v1/activations/{activation_id}/refresh": {
                "post": _agent_op("Refresh a token", "SignedProof", ActivationToken, REFRESH, path=True)
            },
            "/v1/activations/{activation_id}/deactivate": {
                "post": _agent_op("Free a seat", "SignedProof", SeatEnded, DEACTIVATE, path=True)
            },
            "/v1/offline/activations": {
                "post": _agent_op(
                    "Activate an air-gapped machine", "SignedRequest", ActivationToken, ACTIVATE, "200,201"
                )
            },
            "/v1/offline/deactivations": {
                "post": _agent_op("Upload an offline deactivation", "SignedProof", SeatEnded, DEACTIVATE)
            },
            "/.well-known/jwks.json": {"get": operation("Public signing keys", ok={"200": Jwks})},
            "/healthz": {"get": operation("Liveness", ok={"200": Health})},
            "/readyz": {
                "get": operation("Readiness", ok={"200": Readiness}, refusals=((503, "not-ready"),))
            },
            **licences.PATHS,
            **transfers.PATHS,
            **customers.PATHS,
            **customers.PUBLIC_PATHS,
            **webhooks.PATHS,
            **catalogue.PATHS,
            "/v1/plans/{plan}": licences.PATHS["/v1/plans/{plan}"] | catalogue.PLAN_SHOW,
        }
    )
    for name, answer_model in sorted(RESPONSE_MODELS.items()):
        schema = answer_model.model_json_schema(ref_template="#/components/schemas/{model}")
        for inner, definition in schema.pop("$defs", {}).items():
            _add(schemas, inner, definition)
        _add(schemas, name, schema)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tessera licence server", "version": "1"},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "an API token, tsk_…"}},
        },
    }


def _add(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    """One component per name: a request body and a response model may not share one."""
    if schemas.setdefault(name, schema) != schema:
        raise ValueError(f"two different schemas are called {name}")


@dataclass(frozen=True)
class Document:
    """A response body built once, with its strong validator."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, payload: Any) -> Document:
        body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        return cls(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    def matches(self, if_none_match: str | None) -> bool:
        """RFC 9110 13.1.2: If-None-Match compares weakly, and `*` matches any current representation."""
        if if_none_match is None:
            return False
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or self.etag in tags


OPENAPI = web.AppKey("openapi_document", Document)


async def openapi_cache(app: web.Application) -> AsyncIterator[None]:
    """The document depends only on the code and the public URL: built once at start-up (~0.1 s: a JSON
    Schema per request and response model)."""
    app[OPENAPI] = Document.of(openapi_document(app[SETTINGS].public_url))
    yield


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.StreamResponse:
    document = request.app[OPENAPI]
    headers = {"ETag": document.etag, "Cache-Control": "public, max-age=300"}
    if document.matches(request.headers.get("If-None-Match")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=document.body, content_type="application/json", headers=headers)
