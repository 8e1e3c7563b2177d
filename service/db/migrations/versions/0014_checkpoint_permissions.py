"""admin_keys and checkpoint_permissions: operators' admin keys, and fine-tuned models shared
with other projects

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "admin_keys",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("redacted", sa.String(40), nullable=False),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_admin_keys"),
        sa.UniqueConstraint("id", name="uq_admin_keys_id"),
        sa.UniqueConstraint("key_hash", name="uq_admin_keys_key_hash"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "checkpoint_permissions",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("checkpoint", sa.String(300), nullable=False),
        sa.Column("owner_project_id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_project_id"], ["projects.id"],
            name="fk_checkpoint_permissions_owner_project_id_projects", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"],
            name="fk_checkpoint_permissions_project_id_projects", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_checkpoint_permissions"),
        sa.UniqueConstraint("id", name="uq_checkpoint_permissions_id"),
        sqlite_autoincrement=True,
    )  # fmt: skip
    op.create_index(
        "uq_checkpoint_permissions_checkpoint_project_id",
        "checkpoint_permissions",
        ["checkpoint", "project_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(
        "uq_checkpoint_permissions_checkpoint_project_id", table_name="checkpoint_permissions"
    )
    op.drop_table("checkpoint_permissions")
    op.drop_table("admin_keys")
