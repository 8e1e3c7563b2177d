"""durable usage: requests, tokens and training per project, model and hour

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "usage_hours",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("base_model", sa.String(64), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=False),
        sa.Column("training_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_usage_hours"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "uq_usage_hours_project_id_model_hour",
        "usage_hours",
        ["project_id", "model", "hour"],
        unique=True,
    )
    op.create_index("ix_usage_hours_hour", "usage_hours", ["hour"])


def downgrade() -> None:
    op.drop_table("usage_hours")
