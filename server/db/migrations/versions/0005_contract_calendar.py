"""contract calendar: processing working days per plan, the day a cancellation was received; prices
with effective dates, per package or per seat

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
        batch_op.add_column(sa.Column("price_per", sa.String(length=10), server_default="package", nullable=False))
    op.create_table(
        "plan_prices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("renewal_price_cents", sa.Integer(), nullable=True),
        sa.Column("host_change_price_cents", sa.Integer(), nullable=True),
        sa.Column("dongle_replacement_price_cents", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "price_cents >= 0 AND (renewal_price_cents IS NULL OR renewal_price_cents >= 0) AND "
            "(host_change_price_cents IS NULL OR host_change_price_cents >= 0) AND "
            "(dongle_replacement_price_cents IS NULL OR dongle_replacement_price_cents >= 0)",
            name=op.f("ck_plan_prices_prices"),
        ),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name=op.f("fk_plan_prices_plan_id_plans")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_prices")),
        sa.UniqueConstraint("plan_id", "effective_from", name=op.f("uq_plan_prices_plan_id")),
    )
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
    op.drop_table("plan_prices")
    with op.batch_alter_table("maintenance_terms", schema=None) as batch_op:
        batch_op.drop_column("cancellation_received_on")
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_column("price_per")
        batch_op.drop_column("processing_days")
