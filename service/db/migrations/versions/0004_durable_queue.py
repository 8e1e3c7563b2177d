"""durable queue: lost-lease count, per-step metrics events, published checkpoints

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs") as batch:
        batch.add_column(sa.Column("lost_leases", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("fine_tuning_job_events") as batch:
        batch.add_column(sa.Column("step", sa.Integer(), nullable=True))
        batch.create_index(
            "uq_fine_tuning_job_events_job_id_type_step", ["job_id", "type", "step"], unique=True
        )
    op.create_table(
        "fine_tuning_job_checkpoints",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["fine_tuning_jobs.id"],
            name="fk_fine_tuning_job_checkpoints_job_id_fine_tuning_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_fine_tuning_job_checkpoints"),
        sa.UniqueConstraint("id", name="uq_fine_tuning_job_checkpoints_id"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_fine_tuning_job_checkpoints_job_id_seq",
        "fine_tuning_job_checkpoints",
        ["job_id", "seq"],
    )
    op.create_index(
        "uq_fine_tuning_job_checkpoints_job_id_step",
        "fine_tuning_job_checkpoints",
        ["job_id", "step"],
        unique=True,
    )
    op.create_index(
        "ix_fine_tuning_job_checkpoints_project_id", "fine_tuning_job_checkpoints", ["project_id"]
    )
    op.create_index("ix_fine_tuning_job_checkpoints_name", "fine_tuning_job_checkpoints", ["name"])


def downgrade() -> None:
    op.drop_table("fine_tuning_job_checkpoints")
    with op.batch_alter_table("fine_tuning_job_events") as batch:
        batch.drop_index("uq_fine_tuning_job_events_job_id_type_step")
        batch.drop_column("step")
    with op.batch_alter_table("fine_tuning_jobs") as batch:
        batch.drop_column("lost_leases")
