"""batches: the Batch API's batches (leased by the batch runner) and each line's outcome

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    _create_batches()
    _create_batch_lines()


def _create_batches() -> None:
    op.create_table(
        "batches",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("input_file_id", sa.String(64), nullable=False),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.String(300), nullable=True),
        sa.Column("metadata", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("output_expires_after", sa.BigInteger(), nullable=True),
        sa.Column("errors", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("output_file_id", sa.String(64), nullable=True),
        sa.Column("error_file_id", sa.String(64), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("in_progress_at", sa.BigInteger(), nullable=True),
        sa.Column("finalizing_at", sa.BigInteger(), nullable=True),
        sa.Column("completed_at", sa.BigInteger(), nullable=True),
        sa.Column("failed_at", sa.BigInteger(), nullable=True),
        sa.Column("expired_at", sa.BigInteger(), nullable=True),
        sa.Column("cancelling_at", sa.BigInteger(), nullable=True),
        sa.Column("cancelled_at", sa.BigInteger(), nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_batches_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_batches"),
        sa.UniqueConstraint("id", name="uq_batches_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_batches_project_id_seq", "batches", ["project_id", "seq"])
    op.create_index("ix_batches_status_seq", "batches", ["status", "seq"])


def _create_batch_lines() -> None:
    op.create_table(
        "batch_lines",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name="fk_batch_lines_batch_id_batches", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_batch_lines"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "uq_batch_lines_batch_id_line", "batch_lines", ["batch_id", "line"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_batch_lines_batch_id_line", table_name="batch_lines")
    op.drop_table("batch_lines")
    op.drop_index("ix_batches_status_seq", table_name="batches")
    op.drop_index("ix_batches_project_id_seq", table_name="batches")
    op.drop_table("batches")
