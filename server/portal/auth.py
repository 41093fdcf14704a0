"""Signing in and out, setting a password from a one-time link, the second factor, the account page."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from aiohttp import web

from server.api.context import SETTINGS
from server.domain.errors import NotFound, TooManyAttempts, ValidationFailed
from server.portal.kit import (
    PREFIX,
    SESSION_COOKIE,
    address,
    clear_cookie,
    field,
    lifetimes,
    me,
    now,
    public,
    render,
    run_plain,
    see_other,
    set_cookie,
)
from server.services import accounts, portal_sessions

routes = web.RouteTableDef()
WRONG = "the e-mail address, password or code is wrong"


def _next(target: str) -> str:
    """Only a path inside the portal: never another site (an open redirect)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith(PREFIX + "/") or target.startswith("//"):
        return PREFIX + "/"
    return target


@routes.get("/sign-in")
@public
async def sign_in_page(request: web.Request) -> web.Response:
    notice = {"signed-out": "You are signed out.", "password-set": "Your password is set: sign in with it."}
    return render(request, "sign_in.html", {"next": _next(request.query.get("next", PREFIX + "/")),
                                            "email": "", "error": None,
                                            "message": notice.get(request.query.get("done", ""))})  # fmt: skip


@routes.post("/sign-in")
@public
async def sign_in(request: web.Request) -> web.StreamResponse:
    email, password, code = field(request, "email", 254), field(request, "password", 1024), field(request, "code", 12)
    target = _next(field(request, "next"))
    context = {"next": target, "email": email, "message": None}
    moment = now()
    try:
        facts = await run_plain(request, accounts.sign_in_facts, email, address(request), moment)
    except TooManyAttempts as exc:
        response = render(request, "sign_in.html", context | {"error": exc.detail}, status=429)
        response.headers["Retry-After"] = str(exc.extra["retry_after"])
        return response
    loop = asyncio.get_running_loop()
    ok = await loop.run_in_executor(None, accounts.verify_password, facts.password_hash, password)
    step = None
    if ok and facts.totp_secret is not None:
        step = accounts.totp_step(facts.totp_secret, code, moment, facts.totp_last_step)
        ok = step is not None
    if not ok or facts.user_id is None:
        await run_plain(request, accounts.record_failure, email, address(request), moment)
        return render(request, "sign_in.html", context | {"error": WRONG}, status=401)
    token = await run_plain(
        request, accounts.complete_sign_in, facts.user_id, email, step, address(request),
        request.headers.get("User-Agent", ""), moment, lifetimes(request), request.cookies.get(SESSION_COOKIE),
    )  # fmt: skip
    response = see_other(target)
    set_cookie(request, response, SESSION_COOKIE, token, int(lifetimes(request).absolute.total_seconds()))
    raise response


@routes.get("/forgot")
@public
async def forgot_page(request: web.Request) -> web.Response:
    mail = bool(request.config_dict[SETTINGS].smtp_host)
    return render(request, "forgot.html", {"mail": mail, "sent": False, "error": None})


@routes.post("/forgot")
@public
async def forgot(request: web.Request) -> web.Response:
    """The same answer whether the address is known or not; a link only by mail, never on the page."""
    if not request.config_dict[SETTINGS].smtp_host:
        return render(request, "forgot.html", {"mail": False, "sent": False, "error": None}, status=409)
    email = field(request, "email", 254)
    if "@" not in email:
        return render(request, "forgot.html", {"mail": True, "sent": False, "error": "Give your e-mail address."},
                      status=422)  # fmt: skip
    try:
        await run_plain(request, accounts.request_reset, email, address(request), now())
    except TooManyAttempts as exc:
        response = render(request, "forgot.html", {"mail": True, "sent": False, "error": exc.detail}, status=429)
        response.headers["Retry-After"] = str(exc.extra["retry_after"])
        return response
    return render(request, "forgot.html", {"mail": True, "sent": True, "error": None})


@routes.post("/sign-out")
async def sign_out(request: web.Request) -> web.StreamResponse:
    await run_plain(request, portal_sessions.end, request.cookies.get(SESSION_COOKIE, ""), now())
    response = see_other(f"{PREFIX}/sign-in?done=signed-out")
    clear_cookie(request, response, SESSION_COOKIE)
    raise response


@routes.post("/sign-out-everywhere")
async def sign_out_everywhere(request: web.Request) -> web.StreamResponse:
    await run_plain(request, portal_sessions.end_everywhere, me(request).user_id, now())
    response = see_other(f"{PREFIX}/sign-in?done=signed-out")
    clear_cookie(request, response, SESSION_COOKIE)
    raise response


@routes.get("/set-password")
@public
async def set_password_page(request: web.Request) -> web.Response:
    token = request.query.get("token", "")[:100]
    try:
        holder = await run_plain(request, accounts.link_holder, token, now())
    except NotFound as exc:
        return render(request, "error.html", {"status": 404, "title": "Link not valid", "detail": exc.detail},
                      status=404)  # fmt: skip
    return render(request, "set_password.html", {"token": token, "holder": holder, "error": None})


@routes.post("/set-password")
@public
async def set_password(request: web.Request) -> web.StreamResponse:
    token, password, again = (
        field(request, "token", 100),
        field(request, "password", 1024),
        field(request, "again", 1024),
    )
    try:
        holder = await run_plain(request, accounts.link_holder, token, now())
    except NotFound as exc:
        return render(request, "error.html", {"status": 404, "title": "Link not valid", "detail": exc.detail},
                      status=404)  # fmt: skip
    try:
        if password != again:
            raise ValidationFailed("the two passwords differ")
        password_hash = await asyncio.get_running_loop().run_in_executor(None, accounts.hash_password, password)
        await run_plain(request, accounts.set_password, token, password_hash, now())
    except ValidationFailed as exc:
        return render(request, "set_password.html", {"token": token, "holder": holder, "error": exc.detail},
                      status=422)  # fmt: skip
    raise see_other(f"{PREFIX}/sign-in?done=password-set")


@routes.get("/account")
async def account(request: web.Request) -> web.Response:
    notice = {"totp-on": "Your second factor is set up: sign-ins now ask for a code."}
    return render(request, "account.html", {"message": notice.get(request.query.get("done", ""))})


@routes.get("/account/totp")
async def totp_page(request: web.Request) -> web.Response:
    if me(request).totp_enabled:
        raise see_other(f"{PREFIX}/account")
    enrolment = await run_plain(request, accounts.totp_begin, me(request).user_id)
    return render(request, "totp.html", {"enrolment": enrolment, "error": None})


@routes.post("/account/totp")
async def totp_confirm(request: web.Request) -> web.StreamResponse:
    try:
        await run_plain(request, accounts.totp_confirm, me(request).user_id, field(request, "code", 12), now())
    except ValidationFailed as exc:
        enrolment = await run_plain(request, accounts.totp_begin, me(request).user_id)
        return render(request, "totp.html", {"enrolment": enrolment, "error": exc.detail}, status=422)
    raise see_other(f"{PREFIX}/account?done=totp-on")


@public
async def not_found(request: web.Request) -> web.Response:
    raise web.HTTPNotFound()
