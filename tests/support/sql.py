"""Run one SQL statement against a test's database, on either backend, through the server's own engine set-up."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from server.db.database import open_database


def query_sql(url: str, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """The statement's rows (none for an UPDATE or DELETE), committed."""

    async def go() -> list[tuple[Any, ...]]:
        db = open_database(url, pool_size=1)
        try:
            return await db.run(lambda conn: _rows(conn.execute(text(statement), params)))
        finally:
            await db.close()

    return asyncio.run(go())


def _rows(result: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in result] if result.returns_rows else []


def run_sql(url: str, statement: str, **params: Any) -> None:
    query_sql(url, statement, **params)
