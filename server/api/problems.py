"""RFC 9457 problem documents (server.api.front turns every failure into one), and reading a JSON body."""

from __future__ import annotations

import itertools
import os
import re
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError

from server.api.context import SETTINGS
from server.domain.errors import (
    BodyTooLarge,
    DomainError,
    MalformedBody,
    UnsupportedMediaType,
    ValidationFailed,
    http_status,
)
from server.logs import REQUEST_ID

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


HTTP_CODES = {404: "not-found", 405: "method-not-allowed", 413: "validation-error", 401: "unauthorised"}


REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
UNMATCHED = "unmatched"
# Our own request ids: a random prefix per process and a counter, unique without a uuid4 per request (an id
# names a request in the log; it proves nothing, so it need not be unpredictable).
_ID_PREFIX = os.urandom(8).hex() + "-"
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


def is_duplicate(exc: IntegrityError) -> bool:
    """A unique or primary-key violation (PostgreSQL 23505, SQLite's UNIQUE constraint), not a broken
    foreign key or check: those are bugs, and stay 500s."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate) == "23505"
    return getattr(orig, "sqlite_errorname", "") in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY")


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
