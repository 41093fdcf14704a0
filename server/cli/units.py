"""What every tessera-admin command module shares: the clock, and one unit of work run on the database the
command line names, on the server's business calendar, with its refusals turned into CLI errors."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from server.cli.kit import CliError
from server.db.database import DatabaseUnavailable, open_database
from server.domain.errors import DomainError
from server.services import terms
from server.settings import SettingsError, load_settings

T = TypeVar("T")
DEFAULT_DB = "sqlite:///var/tessera.db"


def configure_business_calendar() -> None:
    """The CLI counts deadlines on the server's calendar: the same settings (TESSERA_CONFIG's file, then
    TESSERA_BUSINESS_TIME_ZONE and TESSERA_HOLIDAYS)."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise CliError(exc.code, str(exc)) from exc
    terms.configure_calendar(settings.business_time_zone, settings.holidays)


def now() -> datetime:
    return datetime.now(UTC)


def run_unit(args: argparse.Namespace, fn: Callable[..., T], *fn_args: Any) -> T:
    url = args.db or os.environ.get("TESSERA_DB") or DEFAULT_DB
    configure_business_calendar()

    async def go() -> T:
        db = open_database(url, pool_size=1)
        try:
            return await db.run(fn, *fn_args)
        finally:
            await db.close()

    try:
        return asyncio.run(go())
    except DomainError as exc:
        raise CliError.from_domain(exc) from exc
    except (OperationalError, ProgrammingError) as exc:
        text = str(exc.orig)
        if "no such table" in text or "does not exist" in text:
            raise CliError("schema-missing", f"{url} has no schema: run `tessera-server migrate`") from exc
        raise CliError("database-error", f"{url}: {text}") from exc
    except (DatabaseUnavailable, DBAPIError, OSError, ValueError) as exc:
        raise CliError("database-unavailable", f"{url}: {exc}") from exc
