"""The ids of the commands applied, so a command delivered twice is applied once.

Revision ID: 0004
Revises: 0003

Additive: a replica of the previous release does not know the table and applies commands
as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "command_ids",
        sa.Column("id", sa.String(length=255), primary_key=True),
        sa.Column("seen_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_command_ids_seen_at", "command_ids", ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_command_ids_seen_at", table_name="command_ids")
    op.drop_table("command_ids")
