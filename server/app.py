"""create_app(settings): routes and resources; no I/O until the app starts.

No aiohttp middleware: what every request needs is server.api.front, which its listener puts before the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from aiohttp import web
from sqlalchemy import Connection, delete

from keys.keyring import Keyring
from server.api import agent, catalogue, customers, docs, licences, ops, transfers, webhooks
from server.api.connections import CONNECTIONS, Connections
from server.api.context import IN_FLIGHT, KEYRING, METRICS, SERVICES, SETTINGS, SIGNER, InFlight, Metrics, Services
from server.api.notifications import notifications, run_daily_notices
from server.db.database import DatabaseUnavailable, open_database
from server.db.models import AuthFailure, PortalLink, RequestNonce
from server.portal import add_portal
from server.services import accounts, portal_sessions
from server.services.activation import THROTTLE_WINDOW, ActivationService
from server.services.licensing import LicensingService
from server.services.terms import configure_calendar, run_renewals
from server.settings import Settings
from server.signing import TokenSigner

log = logging.getLogger("tessera.server")
JANITOR_PERIOD = 300.0
RENEWAL_PERIOD = 60.0


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    configure_calendar(settings.business_time_zone, settings.holidays)
    app[METRICS] = Metrics()
    app[CONNECTIONS] = Connections.from_settings(settings, on_close=app[METRICS].count_close)
    app[IN_FLIGHT] = InFlight()
    app.add_routes(agent.routes)
    app.add_routes(licences.routes)
    app.add_routes(transfers.routes)
    app.add_routes(customers.routes)
    app.add_routes(ops.routes)
    app.add_routes(docs.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(catalogue.routes)
    if settings.bench_echo:
        app.router.add_post("/bench/echo", ops.bench_echo)
    app.cleanup_ctx.append(ops.openapi_cache)
    add_portal(app)
    app.cleanup_ctx.append(signing_keys)
    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(janitor)
    app.cleanup_ctx.append(notifications)
    app.cleanup_ctx.append(renewals)
    return app


async def signing_keys(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    keyring = Keyring(settings.keys_dir, settings.key_passphrase)
    app[KEYRING] = keyring
    app[SIGNER] = TokenSigner(keyring.signer(), settings.public_url)
    yield


async def database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    db = open_database(settings.database_url, pool_size=settings.pool_size)
    app[SERVICES] = Services(db=db, activations=ActivationService(db), licensing=LicensingService(db))
    app[ops.LIVE] = ops.LiveCollector(db)
    yield
    await db.close()


PORTAL_KEEP = timedelta(days=30)  # ended sessions and spent links stay a month: who signed in from where, when


def purge_expired(conn: Connection, now: datetime) -> None:
    conn.execute(delete(RequestNonce).where(RequestNonce.expires_at < now))
    conn.execute(delete(AuthFailure).where(AuthFailure.window_start < now - THROTTLE_WINDOW))
    portal_sessions.purge(conn, now, keep=PORTAL_KEEP)
    conn.execute(delete(PortalLink).where(PortalLink.expires_at < now - PORTAL_KEEP))
    accounts.purge_throttle(conn, now)


async def janitor(app: web.Application) -> AsyncIterator[None]:
    """Drops spent nonces, old throttle windows, and the portal's month-old sessions and links; idempotent, so
    every process may run it."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(JANITOR_PERIOD)
            try:
                await app[SERVICES].db.run(purge_expired, datetime.now(UTC))
            except DatabaseUnavailable:
                log.warning("janitor: database unavailable, will retry")

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def renewals(app: web.Application) -> AsyncIterator[None]:
    """Creates due maintenance renewals (rule 1) without anyone calling at the right moment. Every process
    runs it; each licence is renewed under its row lock and a unique (licence, start) index, so never twice."""

    async def loop() -> None:
        while True:
            try:
                created = await run_renewals(app[SERVICES].db, datetime.now(UTC))
                if created:
                    log.info("renewals: %d maintenance term(s) created", created)
                await run_daily_notices(app, datetime.now(UTC))
            except DatabaseUnavailable:
                log.warning("renewals: database unavailable, will retry")
            except Exception:  # a background job must outlive one bad licence; the next run retries
                log.exception("renewals: run failed, will retry")
            await asyncio.sleep(RENEWAL_PERIOD)

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
