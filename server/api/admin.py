"""Vendor staff API (admin and support roles). Customer, reseller and support workflows: issue #4."""

from __future__ import annotations

from aiohttp import web

from server.api.context import SERVICES
from server.api.problems import json_response
from server.domain.errors import Forbidden, Unauthorised
from server.services.licensing import Principal

routes = web.RouteTableDef()
STAFF = frozenset({"admin", "support"})


async def principal(request: web.Request, roles: frozenset[str]) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorised("send an API token: Authorization: Bearer tsk_…")
    who = await request.app[SERVICES].licensing.authenticate(token.strip())
    if who.role not in roles:
        raise Forbidden(f"the {who.role} role may not do this")
    return who


@routes.get("/v1/licences")
async def list_licences(request: web.Request) -> web.Response:
    await principal(request, STAFF)
    return json_response(await request.app[SERVICES].licensing.list_licences())


@routes.get("/v1/licences/{licence_id}")
async def show_licence(request: web.Request) -> web.Response:
    await principal(request, STAFF)
    return json_response(await request.app[SERVICES].licensing.show_licence(request.match_info["licence_id"]))
