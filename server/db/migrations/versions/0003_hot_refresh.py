"""activations: leave room on each page so a refresh is a HOT update (PostgreSQL)

A refresh writes one column, refreshed_at, that no index covers. PostgreSQL can then update the
row in place on its own page (a heap-only tuple: no new entry in any of the table's three indexes)
when the page has room for the new version. Pages filled to 100% (the default) have none, so every
refresh of a million-row table added entries to three indexes on random pages. fillfactor 80 keeps
a fifth of each page free for that. It applies to pages written from now on; an existing table
gets it everywhere after `VACUUM FULL activations` (docs/DATA.md). SQLite has no such setting.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 05:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILLFACTOR = 80


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE activations SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE activations RESET (fillfactor)")
