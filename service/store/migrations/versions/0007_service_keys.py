"""Secrets every replica shares, made by the first to start (the intake's seal key).

Revision ID: 0007
Revises: 0006

Additive: a replica of the previous release runs as before (it neither seals nor trusts).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_keys",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("value", sa.String(length=128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_keys")
