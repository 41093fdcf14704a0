"""licence changes after sale: modules on the licence, the contract's end, mandatory maintenance, a back-fee
cap, retired plans

A licence may carry its own modules (`licences.features`; NULL: the plan's defaults) and, once an admin ends
its contract, the moment it stops (`licences.ends_at`). A plan may make maintenance mandatory (002), cap a
reinstatement's back-fee at a number of months, and be retired (no new licences). Nothing existing changes
meaning: every new column is NULL or false for existing rows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


OLD_KINDS = "('licence', 'renewal', 'extension', 'reinstatement', 'host-change', 'dongle-replacement')"
NEW_KINDS = (
    "('licence', 'renewal', 'extension', 'reinstatement', 'host-change', 'dongle-replacement', 'change', 'credit', "
    "'waiver')"
)


def _ledger_checks(kinds: str, amount: str) -> None:
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_ledger_entries_kind"), type_="check")
        batch_op.drop_constraint(op.f("ck_ledger_entries_amount"), type_="check")
        batch_op.create_check_constraint(op.f("ck_ledger_entries_kind"), f"kind IN {kinds}")
        batch_op.create_check_constraint(op.f("ck_ledger_entries_amount"), amount)


def _transfer_charges(charges: str) -> None:
    with op.batch_alter_table("transfer_requests", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_transfer_requests_charge"), type_="check")
        batch_op.create_check_constraint(op.f("ck_transfer_requests_charge"), f"charge IS NULL OR charge IN {charges}")


def upgrade() -> None:
    _ledger_checks(NEW_KINDS, "amount_cents >= 0 OR kind = 'credit'")
    _transfer_charges("('free', 'charged', 'waived')")
    with op.batch_alter_table("licences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("features", sa.JSON(none_as_null=True), nullable=True))
        batch_op.add_column(sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("maintenance_mandatory", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("back_fee_cap_months", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    _transfer_charges("('free', 'charged')")
    _ledger_checks(OLD_KINDS, "amount_cents >= 0")
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_column("retired_at")
        batch_op.drop_column("back_fee_cap_months")
        batch_op.drop_column("maintenance_mandatory")
    with op.batch_alter_table("licences", schema=None) as batch_op:
        batch_op.drop_column("ends_at")
        batch_op.drop_column("features")
