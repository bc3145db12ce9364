"""Silences (Alertmanager's v2 silences API) and heartbeats (dead man's switch).

Revision ID: 0005
Revises: 0004

Additive: a replica of the previous release does not know the tables and pages as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "silences",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("matchers", sa.Text(), nullable=False),
        sa.Column("starts_at", sa.Float(), nullable=False),
        sa.Column("ends_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_silences_ends_at", "silences", ["ends_at"], unique=False)
    op.create_table(
        "heartbeats",
        sa.Column("name", sa.String(length=255), primary_key=True),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("missing_since", sa.Float(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("heartbeats")
    op.drop_index("ix_silences_ends_at", table_name="silences")
    op.drop_table("silences")
