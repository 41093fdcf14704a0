"""The server's side of notifications: the worker in cleanup_ctx, the daily notices in the renewal loop."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime

from aiohttp import web

from server.api.context import SERVICES, SETTINGS
from server.db.database import DatabaseUnavailable
from server.notify.dates import DailyNotices
from server.notify.retention import Retention
from server.notify.worker import Notifier, running

log = logging.getLogger("tessera.notify")
NOTIFIER = web.AppKey("notifier", Notifier)
NOTICES = web.AppKey("daily_notices", DailyNotices)
RETENTION = web.AppKey("outbox_retention", Retention)


async def notifications(app: web.Application) -> AsyncIterator[None]:
    """The delivery worker of this process (every process runs one; they share the work safely)."""
    app[NOTICES] = DailyNotices(app[SETTINGS])
    app[RETENTION] = Retention(app[SETTINGS])
    async with running(app[SERVICES].db, app[SETTINGS]) as notifier:
        app[NOTIFIER] = notifier
        yield


async def run_daily_notices(app: web.Application, now: datetime) -> None:
    """From the per-minute renewal job, after the renewals (a renewed licence is owed no lapse notice): the
    date-driven notices, then the outbox's retention."""
    try:
        emitted = await app[NOTICES](app[SERVICES].db, now)
        if emitted:
            log.info("notices: %d date-driven notice(s) written", emitted)
        deliveries, events = await app[RETENTION](app[SERVICES].db, now)
        if deliveries or events:
            log.info("outbox: purged %d delivered deliveries and %d event(s) past retention", deliveries, events)
    except DatabaseUnavailable:
        log.warning("notices: database unavailable, will retry")
    except Exception:  # the renewal job must go on; the next minute retries
        log.exception("notices: run failed, will retry")
