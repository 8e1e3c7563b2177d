"""fine-tuning jobs and their events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    _create_jobs()
    _create_events()


def _create_jobs() -> None:
    op.create_table(
        "fine_tuning_jobs",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("training_file", sa.String(64), nullable=False),
        sa.Column("validation_file", sa.String(64), nullable=True),
        sa.Column("suffix", sa.String(64), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("integrations", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("fine_tuned_model", sa.String(256), nullable=True),
        sa.Column("result_files", sa.JSON(), nullable=False),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("estimated_finish", sa.BigInteger(), nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_fine_tuning_jobs_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_fine_tuning_jobs")),
        sa.UniqueConstraint("id", name=op.f("uq_fine_tuning_jobs_id")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_fine_tuning_jobs_project_id_seq", "fine_tuning_jobs", ["project_id", "seq"])
    op.create_index("ix_fine_tuning_jobs_status_seq", "fine_tuning_jobs", ["status", "seq"])


def _create_events() -> None:
    op.create_table(
        "fine_tuning_job_events",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["fine_tuning_jobs.id"],
            name=op.f("fk_fine_tuning_job_events_job_id_fine_tuning_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_fine_tuning_job_events")),
        sa.UniqueConstraint("id", name=op.f("uq_fine_tuning_job_events_id")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_fine_tuning_job_events_job_id_seq", "fine_tuning_job_events", ["job_id", "seq"]
    )


def downgrade() -> None:
    op.drop_table("fine_tuning_job_events")
    op.drop_table("fine_tuning_jobs")
