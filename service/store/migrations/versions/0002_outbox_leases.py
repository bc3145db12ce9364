"""The outbox is a leased work queue: one replica publishes each event.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("lease_until", sa.Float(), nullable=True))
        batch.add_column(sa.Column("lease_owner", sa.String(length=32), nullable=True))
    op.create_index("ix_outbox_key", "outbox", ["key", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_outbox_key", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("lease_owner")
        batch.drop_column("lease_until")
