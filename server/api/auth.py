"""Bearer API tokens: who is asking. What they may do is the services' business (server.domain.access)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from server.api.context import SERVICES
from server.domain.errors import Unauthorised, ValidationFailed
from server.services.access import Principal
from server.services.requests import has_control_characters

# What `tessera-admin token create` makes: tsk_ and URL-safe base64. Anything else is unknown without a look-up
# (aiohttp hands over header bytes that are not UTF-8 as lone surrogates, which no hash can encode).
_API_TOKEN = re.compile(r"tsk_[A-Za-z0-9_-]{1,196}")


async def principal(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorised("send an API token: Authorization: Bearer tsk_…")
    if not _API_TOKEN.fullmatch(token.strip()):
        raise Unauthorised("unknown or revoked API token")
    return await request.app[SERVICES].licensing.authenticate(token.strip())


async def run(request: web.Request, unit: Any, *args: Any) -> Any:
    """Runs a service unit as the caller: unit(conn, principal, *args)."""
    who = await principal(request)
    return await request.app[SERVICES].db.run(unit, who, *args)


def now() -> datetime:
    return datetime.now(UTC)


def only_query(request: web.Request, *names: str) -> None:
    """A query string holds only the documented parameters, each at most once."""
    for name in request.query:
        if name not in names:
            raise ValidationFailed(f"unknown query parameter {name[:40]!r}: use {', '.join(names)}")
        if len(request.query.getall(name)) > 1:
            raise ValidationFailed(f"query parameter {name!r} given more than once")


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # ASCII digits only (str.isdigit() also admits "٣" and "²"), and few of them: int() refuses more than
    # 4300 digits with a ValueError.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(high))) or not low <= int(raw) <= high:
        raise ValidationFailed(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def query_text(request: web.Request, name: str, max_length: int) -> str | None:
    """A free-text query parameter: 1 to max_length characters, none of them a control character (PostgreSQL
    cannot compare text with a NUL in it), like every text field of a body."""
    raw = request.query.get(name)
    if raw is not None and (not 1 <= len(raw) <= max_length or has_control_characters(raw)):
        raise ValidationFailed(f"{name} must be 1 to {max_length} characters, none of them a control character")
    return raw


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is not None and raw not in choices:
        raise ValidationFailed(f"{name} must be one of {', '.join(choices)}")
    return raw
