"""Bearer API tokens: who is asking. What they may do is the services' business (server.domain.access)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from server.api.context import SERVICES
from server.domain.errors import Unauthorised, ValidationFailed
from server.services.access import Principal


async def principal(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorised("send an API token: Authorization: Bearer tsk_…")
    if len(token) > 200:
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
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ValidationFailed(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is not None and raw not in choices:
        raise ValidationFailed(f"{name} must be one of {', '.join(choices)}")
    return raw
