"""Create or upgrade the schema with Alembic (the only way the schema is made)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from server.db.database import normalise_url

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's config is an ini parser: a literal % in a password must be doubled.
    rendered = normalise_url(url).render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", rendered)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    parsed = normalise_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
        import asyncio

        from sqlalchemy.ext.asyncio import create_async_engine

        async def read() -> str | None:
            engine = create_async_engine(parsed)
            async with engine.connect() as conn:
                rev = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
            await engine.dispose()
            return rev

        return asyncio.run(read())
    engine = create_engine(parsed)
    with engine.connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
    engine.dispose()
    return rev
