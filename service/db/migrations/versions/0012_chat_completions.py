"""chat_completions: chat completions created with store: true, per project, until they expire

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "chat_completions",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("completion", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_chat_completions_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_chat_completions"),
        sa.UniqueConstraint("id", name="uq_chat_completions_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_chat_completions_project_id_seq", "chat_completions", ["project_id", "seq"])
    op.create_index("ix_chat_completions_expires_at", "chat_completions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_chat_completions_expires_at", table_name="chat_completions")
    op.drop_index("ix_chat_completions_project_id_seq", table_name="chat_completions")
    op.drop_table("chat_completions")
