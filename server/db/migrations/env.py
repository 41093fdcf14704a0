from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import Connection, create_engine, pool
from sqlalchemy.ext.asyncio import create_async_engine

from server.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(run_with)
    await engine.dispose()


def run_online() -> None:
    url: Any = config.get_main_option("sqlalchemy.url")
    if url.startswith("sqlite"):
        engine = create_engine(url, poolclass=pool.NullPool)
        with engine.connect() as connection:
            run_with(connection)
        engine.dispose()
    else:
        asyncio.run(run_async(url))


run_online()
