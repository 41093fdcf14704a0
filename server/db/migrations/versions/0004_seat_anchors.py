"""seat anchors: identifying components only, minimum per plan, counted rebinds

A seat keeps the fingerprint it was enrolled with (its anchor), and only identifying components
(machine-id, DMI product UUID, board serial, NIC MACs, disk serials) count towards a match: a CPU
model or a virtualisation label is the same on thousands of machines. Existing seats keep their
identifying components; their match count and index rows are recomputed from the plan's tolerance.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 08:00:00
"""

import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here: a migration must not change meaning when the application's list grows.
IDENTIFYING = frozenset({"machine-id", "dmi-product-uuid", "board-serial", "mac", "disk-serial"})


def upgrade() -> None:
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("min_identifying", sa.Integer(), server_default=sa.text("2"), nullable=False))
        batch_op.add_column(sa.Column("rebinds_per_term", sa.Integer(), server_default=sa.text("2"), nullable=False))
    op.create_table(
        "activation_rebinds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("licence_id", sa.Uuid(), nullable=False),
        sa.Column("activation_id", sa.Uuid(), nullable=False),
        sa.Column("old_agent_key", sa.String(length=64), nullable=False),
        sa.Column("new_agent_key", sa.String(length=64), nullable=False),
        sa.Column("proven", sa.Boolean(), nullable=False),
        sa.Column("rebound_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["activation_id"], ["activations.id"], name=op.f("fk_activation_rebinds_activation_id_activations")
        ),
        sa.ForeignKeyConstraint(["licence_id"], ["licences.id"], name=op.f("fk_activation_rebinds_licence_id_licences")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activation_rebinds")),
    )
    with op.batch_alter_table("activation_rebinds", schema=None) as batch_op:
        batch_op.create_index("ix_activation_rebinds_licence", ["licence_id", "rebound_at"], unique=False)
        batch_op.create_index("ix_activation_rebinds_old_key", ["activation_id", "old_agent_key"], unique=False)
    with op.batch_alter_table("activations", schema=None) as batch_op:
        batch_op.create_index("ix_activations_agent_key", ["licence_id", "agent_key"], unique=False)
    _anchor_existing_seats()


def _anchor_existing_seats() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT a.id, a.licence_id, a.host_components, a.ended_at, p.tolerance FROM activations a "
            "JOIN licences l ON l.id = a.licence_id JOIN plans p ON p.id = l.plan_id"
        )
    ).fetchall()
    activations = sa.table("activations", sa.column("id", sa.Uuid()), sa.column("host_components", sa.JSON()),
                           sa.column("host_match", sa.Integer()))  # fmt: skip
    digests = sa.table("activation_digests", sa.column("licence_id", sa.Uuid()), sa.column("digest", sa.String()),
                       sa.column("activation_id", sa.Uuid()))  # fmt: skip
    for row in rows:
        components = row.host_components
        if isinstance(components, str):
            components = json.loads(components)
        kept = sorted({(k, d) for k, d in components if k in IDENTIFYING})
        match = max(1, len(kept) - max(row.tolerance, 0))
        activation_id = _uuid(row.id)
        bind.execute(
            activations.update()
            .where(activations.c.id == activation_id)
            .values(host_components=[list(c) for c in kept], host_match=match)
        )
        bind.execute(digests.delete().where(digests.c.activation_id == activation_id))
        if row.ended_at is None and kept:
            wanted = max(1, len(kept) - match + 1)
            indexed = sorted({d for _, d in kept[:wanted]})
            bind.execute(
                digests.insert(),
                [{"licence_id": _uuid(row.licence_id), "digest": d, "activation_id": activation_id} for d in indexed],
            )


def _uuid(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def downgrade() -> None:
    with op.batch_alter_table("activations", schema=None) as batch_op:
        batch_op.drop_index("ix_activations_agent_key")
    with op.batch_alter_table("activation_rebinds", schema=None) as batch_op:
        batch_op.drop_index("ix_activation_rebinds_old_key")
        batch_op.drop_index("ix_activation_rebinds_licence")
    op.drop_table("activation_rebinds")
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_column("rebinds_per_term")
        batch_op.drop_column("min_identifying")
