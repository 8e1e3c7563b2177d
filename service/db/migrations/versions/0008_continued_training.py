"""continued training: a job may start from an owned fine-tuned model or checkpoint

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs") as batch:
        batch.add_column(sa.Column("parent_model", sa.String(300), nullable=True))
        batch.add_column(sa.Column("parent_job_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("parent_variant", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs") as batch:
        batch.drop_column("parent_variant")
        batch.drop_column("parent_job_id")
        batch.drop_column("parent_model")
