"""catalogue disabled: products, resellers and customers can be disabled

A disabled product, reseller or customer takes no new licences; the licences it has run on, renew and can be
changed. NULL (every existing row): enabled. Plans already have `retired_at` (0008), their way of the same.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("products", "resellers", "customers")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("disabled_at")
