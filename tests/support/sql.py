"""Run one SQL statement against a test's database, on either backend, through the server's own engine set-up."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from server.db.database import open_database


def run_sql(url: str, statement: str, **params: Any) -> None:
    async def go() -> None:
        db = open_database(url, pool_size=1)
        try:
            await db.run(lambda conn: conn.execute(text(statement), params))
        finally:
            await db.close()

    asyncio.run(go())
