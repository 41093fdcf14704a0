"""RFC 9457 problem documents, and the middleware that turns every failure into one."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError

from server.api.context import IN_FLIGHT, METRICS, SETTINGS, client_ip
from server.db.database import DatabaseUnavailable
from server.domain.errors import (
    BodyTooLarge,
    Conflict,
    DomainError,
    MalformedBody,
    ServiceUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
    http_status,
)
from server.logs import REQUEST_ID, log_request

log = logging.getLogger("tessera.http")
M = TypeVar("M", bound=BaseModel)
# A URN, not a link: the stable `code` is the contract, and no web page stands behind the type.
PROBLEM_TYPE = "urn:tessera:problem:"
JSON = "application/json"


def problem_response(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    body = {"type": PROBLEM_TYPE + code, "title": title, "status": status, "detail": detail, "code": code}
    body |= extra
    request_id = REQUEST_ID.get()
    if request_id is not None:
        body["request_id"] = request_id  # what a customer quotes to support; the same id is in the log
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/problem+json", headers=headers
    )


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type=JSON)


def render_error(error: DomainError) -> web.Response:
    headers = None
    if "retry_after" in error.extra:
        headers = {"Retry-After": str(error.extra["retry_after"])}
    extra = {k: v for k, v in error.extra.items() if k != "retry_after"}
    return problem_response(http_status(error), error.code, error.title, error.detail, headers, **extra)


_HTTP_CODES = {404: "not-found", 405: "method-not-allowed", 413: "validation-error", 401: "unauthorised"}


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
UNMATCHED = "unmatched"
# Our own request ids: a random prefix per process and a counter, unique without a uuid4 per request (an id
# names a request in the log; it proves nothing, so it need not be unpredictable).
_ID_PREFIX = os.urandom(8).hex() + "-"
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


@web.middleware
async def problems_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Request id, problem documents for every failure, then one metric sample and one log event.

    The hot path: everything here is a few dictionary look-ups, one histogram sample and one queued log line.
    """
    started = time.perf_counter()
    incoming = request.headers.get("X-Request-ID")
    request_id = incoming if incoming is not None and _REQUEST_ID.fullmatch(incoming) else new_request_id()
    token = REQUEST_ID.set(request_id)
    in_flight = request.app[IN_FLIGHT]
    in_flight.enter()
    status = 500
    try:
        response = await _as_problem(request, handler)
        status = response.status
        response.headers["X-Request-ID"] = request_id
        if in_flight.draining:
            response.force_close()  # shutting down: the client reconnects to another process
        return response
    except web.HTTPException as exc:  # a redirect, passed on
        status = exc.status
        exc.headers["X-Request-ID"] = request_id
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away before the answer (nginx's code)
        raise
    finally:
        elapsed = time.perf_counter() - started
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        request.app[METRICS].observe_request(request.method, route, status, elapsed)
        log_request(request.method, route, status, round(elapsed * 1000, 3), client_ip(request), request_id)
        REQUEST_ID.reset(token)
        in_flight.leave()


async def _as_problem(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as error:
        return render_error(error)
    except DatabaseUnavailable:
        log.warning("database unavailable for %s %s", request.method, _route(request))
        return render_error(ServiceUnavailable("the licence database is unavailable: try again shortly"))
    except IntegrityError as exc:
        if not _is_duplicate(exc):
            return _internal_error(request)
        # Two requests inserting the same row at the same moment, a race a unit did not foresee: the database
        # refused the second and rolled its unit back, so nothing of it was written. A 409, not a 500; logged,
        # because the unit should decide this itself (take its lock before it reads).
        log.warning("concurrent duplicate in %s %s", request.method, _route(request))
        return render_error(Conflict("another request changed the same thing at the same moment: send it again"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http-error")
        return problem_response(exc.status, code, exc.reason, exc.text or exc.reason)
    except Exception:
        return _internal_error(request)


def _internal_error(request: web.Request) -> web.Response:
    log.exception("unhandled error in %s %s", request.method, _route(request))
    return problem_response(500, "internal-error", "Internal error", "the server failed; this is a bug")


def _is_duplicate(exc: IntegrityError) -> bool:
    """A unique or primary-key violation (PostgreSQL 23505, SQLite's UNIQUE constraint), not a broken
    foreign key or check: those are bugs, and stay 500s."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate) == "23505"
    return getattr(orig, "sqlite_errorname", "") in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY")


def _route(request: web.Request) -> str:
    # The template, never the raw path: a path may carry what a client should not have put there.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


async def read_model(request: web.Request, model: type[M]) -> M:
    """Parse a JSON body into ``model``: wrong type, size or shape is a 4xx, never a 500."""
    if request.content_type != JSON:
        raise UnsupportedMediaType(f"send {JSON}, not {request.content_type or 'no content type'}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"the body is larger than {request.app[SETTINGS].max_body_bytes} bytes") from None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            raise MalformedBody(f"the body is not valid JSON: {exc.errors()[0]['msg']}") from None
        raise ValidationFailed(_describe(exc), errors=_errors(exc)) from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()[:20]]
