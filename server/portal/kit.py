"""The portal's plumbing: sessions from cookies, CSRF, security headers, error pages, rendering, assets.

The portal is an adapter over the services, like `server.api`: a handler parses a form, calls a unit of
work as the signed-in user's Principal and renders HTML. Refusals are the services' own DomainErrors,
shown as pages with the same status the API would answer.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from server.api.context import SERVICES, SETTINGS, client_address
from server.domain.errors import DomainError, NotFound, http_status
from server.services import portal_sessions
from server.services.portal_sessions import Lifetimes, SignedIn

log = logging.getLogger("tessera.portal")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PREFIX = "/portal"
SESSION_COOKIE = "tessera_session"
FORM_COOKIE = "tessera_form"  # the CSRF token of forms shown before sign-in (double-submit)
ME = web.RequestKey("portal_me", SignedIn)
FORM = web.RequestKey("portal_form", MultiDictProxy)  # type: ignore[type-arg]
HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TOTP_PATHS = frozenset({f"{PREFIX}/account/totp", f"{PREFIX}/sign-out"})

SECURITY_HEADERS = {
    # No script, no inline style, nothing from elsewhere: every asset is served here.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # Links carry one-time tokens: never tell another site. (no-referrer would also make browsers send
    # "Origin: null" with our own forms, which the cross-site check refuses.)
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def now() -> datetime:
    return datetime.now(UTC)


def lifetimes(request: web.Request) -> Lifetimes:
    settings = request.config_dict[SETTINGS]
    return Lifetimes(
        idle=timedelta(seconds=settings.portal_session_idle),
        absolute=timedelta(seconds=settings.portal_session_absolute),
    )


async def run(request: web.Request, unit: Callable[..., T], *args: Any) -> T:
    """A unit of work as the signed-in user: unit(conn, principal, *args)."""
    return await request.config_dict[SERVICES].db.run(unit, me(request).principal, *args)


async def run_plain(request: web.Request, unit: Callable[..., T], *args: Any) -> T:
    return await request.config_dict[SERVICES].db.run(unit, *args)


def me(request: web.Request) -> SignedIn:
    return request[ME]


def form(request: web.Request) -> MultiDictProxy:  # type: ignore[type-arg]
    return request[FORM]


def field(request: web.Request, name: str, limit: int = 1000) -> str:
    value = form(request).get(name, "")
    return value[:limit].strip() if isinstance(value, str) else ""


def see_other(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    common = {
        "me": request.get(ME),
        "csrf": form_token(request),
        "asset": lambda name: asset_url(request, name),
        "path": request.path,
    }
    return aiohttp_jinja2.render_template(template, request, common | context, status=status)


# -- cookies ---------------------------------------------------------------------------------------------


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=PREFIX + "/", httponly=True, samesite="Lax",
        secure=request.config_dict[SETTINGS].portal_cookie_secure,
    )  # fmt: skip


def clear_cookie(request: web.Request, response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path=PREFIX + "/", secure=request.config_dict[SETTINGS].portal_cookie_secure,
                        httponly=True, samesite="Lax")  # fmt: skip


def form_token(request: web.Request) -> str:
    """The CSRF token for this page's forms: the session's, or before sign-in the form cookie's."""
    if ME in request:
        return me(request).csrf_token
    token = request.get("portal_form_token")
    if token is None:
        token = request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(32)
        request["portal_form_token"] = token
    return str(token)


# -- what every page passes --------------------------------------------------------------------------------


def public(handler: Handler) -> Handler:
    handler.portal_public = True  # type: ignore[attr-defined]
    return handler


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None  # a sandboxed or privacy-stripped origin is not ours
    return urlsplit(origin).netloc == request.host


def page(handler: Handler) -> Handler:
    """A portal route's handler behind what every page needs: the session, the form check, error pages and the
    security headers. Put on each route as it is added: an aiohttp middleware would send every request of the
    server, the API's too, through aiohttp's middleware chain."""
    public = bool(getattr(handler, "portal_public", False))

    @functools.wraps(handler)
    async def serve(request: web.Request) -> web.StreamResponse:
        try:
            response = await _guarded(request, handler, public)
        except web.HTTPException as exc:
            if exc.status >= 400:
                response = error_page(request, exc.status, exc.reason, exc.text or exc.reason)
            else:
                _finish(request, exc)
                raise
        except DomainError as error:
            response = error_page(request, http_status(error), error.title, error.detail)
            if "retry_after" in error.extra:
                response.headers["Retry-After"] = str(error.extra["retry_after"])
        _finish(request, response)
        return response

    return serve


def _finish(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    token = request.get("portal_form_token")
    if token is not None and request.cookies.get(FORM_COOKIE) != token:
        set_cookie(request, response, FORM_COOKIE, str(token), 3600 * 12)


async def _guarded(request: web.Request, handler: Handler, public: bool) -> web.StreamResponse:
    if request.path.startswith(PREFIX + "/static/"):
        return await handler(request)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        signed_in = await run_plain(request, portal_sessions.resume, token, now(), lifetimes(request))
        if signed_in is not None:
            request[ME] = signed_in
    if request.method == "POST":
        await _check_form(request)
    if ME not in request:
        if public:
            return await handler(request)
        target = request.path_qs if request.method == "GET" else PREFIX + "/"
        response = see_other(f"{PREFIX}/sign-in?next={quote(target, safe='/')}")
        if token:
            clear_cookie(request, response, SESSION_COOKIE)
        raise response
    signed_in = me(request)
    settings = request.config_dict[SETTINGS]
    second_factor_missing = settings.portal_totp_required and signed_in.staff and not signed_in.totp_enabled
    if second_factor_missing and request.path not in TOTP_PATHS:
        raise see_other(f"{PREFIX}/account/totp")
    return await handler(request)


async def _check_form(request: web.Request) -> None:
    """Every state-changing form carries the CSRF token; a cross-site post is refused before the handler."""
    if not _same_origin(request):
        raise web.HTTPForbidden(reason="Cross-site request refused",
                                text="this form was sent from another site: reload the page and try again")  # fmt: skip
    try:
        data = await request.post()
    except ValueError:
        data = MultiDictProxy(MultiDict())
    request[FORM] = data
    sent = data.get("csrf")
    expected = me(request).csrf_token if ME in request else request.cookies.get(FORM_COOKIE)
    if not isinstance(sent, str) or not expected or not hmac.compare_digest(sent, expected):
        raise web.HTTPForbidden(
            reason="Form expired",
            text="this form is missing its security token or has expired: reload the page and try again",
        )


def error_page(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    if status == 404:
        title, detail = "Not found", "there is nothing here, or it is not yours to see"
    context = {"status": status, "title": title, "detail": detail}
    try:
        return render(request, "error.html", context, status=status)
    except Exception:  # rendering the error must not hide it
        log.exception("portal: could not render the error page")
        return web.Response(text=f"{status} {title}: {detail}", status=status)


# -- assets ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    version: str


CONTENT_TYPES = {".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}


def load_assets() -> dict[str, Asset]:
    assets = {}
    for path in sorted(STATIC_DIR.iterdir()):
        if path.suffix in CONTENT_TYPES:
            body = path.read_bytes()
            assets[path.name] = Asset(body, CONTENT_TYPES[path.suffix], hashlib.sha256(body).hexdigest()[:12])
    return assets


ASSETS = web.AppKey("portal_assets", dict)


def asset_url(request: web.Request, name: str) -> str:
    asset = request.config_dict[ASSETS].get(name)
    if asset is None:
        raise NotFound(f"no asset {name!r}")
    return f"{PREFIX}/static/{name}?v={asset.version}"


@public
async def static(request: web.Request) -> web.Response:
    asset = request.config_dict[ASSETS].get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound()
    etag = f'"{asset.version}"'
    # A versioned URL never changes meaning: cache it for a year; an unversioned one briefly.
    versioned = request.query.get("v") == asset.version
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=31536000, immutable" if versioned else "public, max-age=300",
    }
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, content_type=asset.content_type, headers=headers)


def address(request: web.Request) -> str:
    return client_address(request)
