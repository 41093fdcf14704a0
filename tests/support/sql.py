"""Run one SQL statement against a test's database, on either backend, through the server's own engine set-up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from server.db.database import open_database


def run_unit(url: str, fn: Callable[..., Any], *args: Any, single: bool = False) -> Any:
    """`fn(conn, *args)` as one unit of work on a database of its own (`single`: Database.run_single)."""

    async def go() -> Any:
        db = open_database(url, pool_size=2)
        try:
            return await (db.run_single if single else db.run)(fn, *args)
        finally:
            await db.close()

    return asyncio.run(go())


def query_sql(url: str, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """The statement's rows (none for an UPDATE or DELETE), committed."""
    rows: list[tuple[Any, ...]] = run_unit(url, lambda conn: _rows(conn.execute(text(statement), params)))
    return rows


def _rows(result: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in result] if result.returns_rows else []


def run_sql(url: str, statement: str, **params: Any) -> None:
    query_sql(url, statement, **params)
