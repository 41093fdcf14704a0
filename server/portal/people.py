"""A customer's people (users, the two named contacts, invitations) and offline activation by file."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from server.api.context import SERVICES, SETTINGS, SIGNER
from server.domain.access import CUSTOMER_ROLES, PERMISSIONS
from server.domain.errors import NotFound, ValidationFailed
from server.portal.kit import PREFIX, address, form, me, now, render, run, see_other
from server.services import people, portal_views

routes = web.RouteTableDef()
MAX_REQUEST_FILE = 32 * 1024


def _customer_id(request: web.Request) -> str:
    signed_in = me(request)
    if signed_in.role not in CUSTOMER_ROLES or signed_in.customer_id is None:
        raise NotFound("these pages are a customer's")
    return str(signed_in.customer_id)


def _base_url(request: web.Request) -> str:
    return request.config_dict[SETTINGS].public_url


@routes.get("/users")
async def users(request: web.Request) -> web.Response:
    listed = await run(request, people.list_users, _customer_id(request))
    return render(request, "users.html", {
        "listed": listed, "may_manage": me(request).role in PERMISSIONS["users:manage"], "link": None,
        "done": {"contacts": "The named contacts are set.", "disabled": "The user is disabled and signed out.",
                 "added": "The user is added.", "enabled": "The user may sign in again."}.get(
                     request.query.get("done", "")),
    })  # fmt: skip


@routes.post("/users")
async def add_user(request: web.Request) -> web.Response:
    data = form(request)
    name, email, role = (str(data.get(k, "")).strip() for k in ("name", "email", "role"))
    if not name or "@" not in email:
        raise ValidationFailed("give the user's name and e-mail address")
    made = await run(request, people.add_user, _customer_id(request), name[:200], email[:254], role, now())
    link = await run(request, portal_views.invite_user, _customer_id(request), made["id"], now())
    listed = await run(request, people.list_users, _customer_id(request))
    return render(request, "users.html", {"listed": listed, "may_manage": True, "done": "The user is added.",
                                          "link": shown_link(request, link)})  # fmt: skip


def shown_link(request: web.Request, link: dict[str, str]) -> dict[str, Any]:
    """With mail configured the link goes to its holder only (the outbox's user.invited); without, the
    administrator passes it on."""
    if request.config_dict[SETTINGS].smtp_host:
        return {"email": link["email"], "expires_at": link["expires_at"], "mailed": True}
    return {"email": link["email"], "expires_at": link["expires_at"], "mailed": False,
            "url": f"{_base_url(request)}{PREFIX}/set-password?token={link['token']}"}  # fmt: skip


@routes.post("/users/{user_id}/invite")
async def invite(request: web.Request) -> web.Response:
    link = await run(request, portal_views.invite_user, _customer_id(request), request.match_info["user_id"], now())
    listed = await run(request, people.list_users, _customer_id(request))
    return render(request, "users.html", {"listed": listed, "may_manage": True, "done": None,
                                          "link": shown_link(request, link)})  # fmt: skip


@routes.post("/users/{user_id}/disable")
async def disable(request: web.Request) -> web.StreamResponse:
    await run(request, people.disable_user, _customer_id(request), request.match_info["user_id"], now())
    raise see_other(f"{PREFIX}/users?done=disabled")


@routes.post("/users/{user_id}/enable")
async def enable(request: web.Request) -> web.StreamResponse:
    await run(request, people.enable_user, _customer_id(request), request.match_info["user_id"], now())
    raise see_other(f"{PREFIX}/users?done=enabled")


@routes.post("/contacts")
async def contacts(request: web.Request) -> web.StreamResponse:
    data = form(request)
    admin, deputy = str(data.get("system_administrator", "")), str(data.get("deputy", ""))
    await run(request, people.set_contacts, _customer_id(request), admin, deputy, now())
    raise see_other(f"{PREFIX}/users?done=contacts")


@routes.get("/offline")
async def offline_page(request: web.Request) -> web.Response:
    return render(request, "offline.html", {})


@routes.post("/offline")
async def offline_upload(request: web.Request) -> web.Response:
    upload = form(request).get("request")
    if upload is None or isinstance(upload, str):
        raise ValidationFailed("choose the request file that tessera-agent offline-request wrote")
    raw = upload.file.read(MAX_REQUEST_FILE + 1)
    if len(raw) > MAX_REQUEST_FILE:
        raise ValidationFailed("the request file is larger than an offline request can be")
    try:
        signed = orjson.loads(raw)["request"]
    except (ValueError, KeyError, TypeError):
        signed = None
    if not isinstance(signed, str):
        raise ValidationFailed("not an offline request file (tessera-agent offline-request writes one)")
    await run(request, portal_views.offline_request_licence, signed)
    grant = await request.config_dict[SERVICES].activations.activate_offline(signed, address=address(request),
                                                                               now=now())  # fmt: skip
    answer = {
        "activation_id": grant.activation_id,
        "licence_id": grant.licence_id,
        "token": request.config_dict[SIGNER].sign(grant),
        "expires_at": grant.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return web.json_response(answer, headers={
        "Content-Disposition": f'attachment; filename="tessera-answer-{grant.activation_id}.json"'})  # fmt: skip
