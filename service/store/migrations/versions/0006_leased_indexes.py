"""Partial indexes of the leased rows of the work queues (page jobs, timers, remediations).

Revision ID: 0006
Revises: 0005

The lease renewals (every few seconds) read every row of these tables, which keep every job
the deployment ever ran. Additive: a replica of the previous release runs as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("page_jobs", "timers", "remediations")


def upgrade() -> None:
    held = sa.text("lease_until IS NOT NULL")
    for table in TABLES:
        op.create_index(
            f"ix_{table}_leased", table, ["lease_until"], sqlite_where=held, postgresql_where=held
        )


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_leased", table_name=table)
