"""The web portal under /portal/: server-rendered pages for customers, support, resellers and the vendor."""

from __future__ import annotations

from datetime import datetime

import aiohttp_jinja2
import jinja2
from aiohttp import web

from server.api.context import SETTINGS
from server.portal import auth, pages, people, staff
from server.portal.kit import ASSETS, HERE, PREFIX, load_assets, page, static
from server.settings import SettingsError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_portal(app: web.Application) -> None:
    """Mounts the portal on `app` (one sub-application, every route's handler behind `page`); no I/O."""
    settings = app[SETTINGS]
    if not settings.portal_cookie_secure and settings.host not in LOOPBACK:
        raise SettingsError(
            "portal-cookie-insecure",
            "portal_cookie_secure = false is only for plain-HTTP development on loopback "
            f"(the server listens on {settings.host})",
            key="portal_cookie_secure",
        )
    portal = web.Application()
    portal[SETTINGS] = settings
    portal[ASSETS] = load_assets()
    aiohttp_jinja2.setup(
        portal,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        default_helpers=False,
        filters={"money": money, "day": day, "when": when},
    )
    for table in (auth.routes, pages.routes, staff.routes, people.routes):
        for route in table:
            assert isinstance(route, web.RouteDef)  # the tables hold routes, no static directory
            web.RouteDef(route.method, route.path, page(route.handler), route.kwargs).register(portal.router)
    portal.router.add_get("/static/{name}", page(static))
    portal.router.add_route("*", "/{tail:.*}", page(auth.not_found))
    app.router.add_get(PREFIX, _to_portal)
    app.add_subapp(PREFIX, portal)


async def _to_portal(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently(PREFIX + "/")


def money(cents: int | None, currency: str = "EUR") -> str:
    if cents is None:
        return "—"
    return f"{currency} {cents / 100:,.2f}"


def day(moment: str | None) -> str:
    return datetime.fromisoformat(moment).date().isoformat() if moment else "—"


def when(moment: str | None) -> str:
    return datetime.fromisoformat(moment).strftime("%Y-%m-%d %H:%M UTC") if moment else "—"
