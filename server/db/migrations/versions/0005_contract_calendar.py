"""contract calendar: processing working days per plan, the day a cancellation was received

Terms are now anchored to the contract's start day (derived from the terms themselves), so no term
already billed changes: a term that drifted (28 April for a contract started on 31 January) stays as
it is, and the next renewal ends on the contract's boundary again (31 May). Cancellations recorded
before this migration count from the day they were recorded.

A lapsed subscription restarts without back-fees: subscription plans still on the old default rule
(`back-fees`, which no subscription plan could avoid) move to `free`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL_SQLITE = (
    "UPDATE maintenance_terms SET cancellation_received_on = date(cancelled_at) WHERE cancelled_at IS NOT NULL"
)
BACKFILL_POSTGRESQL = (
    "UPDATE maintenance_terms SET cancellation_received_on = (cancelled_at AT TIME ZONE 'UTC')::date "
    "WHERE cancelled_at IS NOT NULL"
)


def upgrade() -> None:
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("processing_days", sa.Integer(), server_default=sa.text("0"), nullable=False))
    with op.batch_alter_table("maintenance_terms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancellation_received_on", sa.Date(), nullable=True))
    bind = op.get_bind()
    # Cancellations recorded before now count from the (UTC) day they were recorded.
    bind.execute(sa.text(BACKFILL_SQLITE if bind.dialect.name == "sqlite" else BACKFILL_POSTGRESQL))
    plans = sa.table("plans", sa.column("kind", sa.String()), sa.column("reinstatement_rule", sa.String()))
    bind.execute(
        plans.update()
        .where(plans.c.kind == "subscription", plans.c.reinstatement_rule == "back-fees")
        .values(reinstatement_rule="free")
    )


def downgrade() -> None:
    with op.batch_alter_table("maintenance_terms", schema=None) as batch_op:
        batch_op.drop_column("cancellation_received_on")
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_column("processing_days")
