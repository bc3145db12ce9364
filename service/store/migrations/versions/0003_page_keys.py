"""Trigger page jobs carry their idempotency key, so a pager's webhook finds the incident.

Revision ID: 0003
Revises: 0002

Additive: a replica of the previous release ignores the column (the trigger rows it adds
have none, and an acknowledgement for such a page is answered "ignored"). The trigger rows
of incidents open at the upgrade get their keys here, so what was paged before the upgrade
can still be acknowledged from the pager.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The key the pagers were sent (PagerDuty dedup_key, Opsgenie alias): a contract that never changes.
from service.notify.base import idempotency_key

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("page_jobs") as batch:
        batch.add_column(sa.Column("dedup_key", sa.String(length=64), nullable=True))
    op.create_index("ix_page_jobs_dedup_key", "page_jobs", ["dedup_key"], unique=False)
    _fill_open_incidents_keys()


def _fill_open_incidents_keys() -> None:
    jobs = sa.table(
        "page_jobs",
        sa.column("id", sa.Integer),
        sa.column("incident_id", sa.String),
        sa.column("opening", sa.Integer),
        sa.column("target", sa.String),
        sa.column("action", sa.String),
        sa.column("dedup_key", sa.String),
    )
    incidents = sa.table("incidents", sa.column("id", sa.String), sa.column("status", sa.String))
    open_ids = sa.select(incidents.c.id).where(incidents.c.status == "open")
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(jobs.c.id, jobs.c.incident_id, jobs.c.opening, jobs.c.target).where(
            jobs.c.action == "trigger", jobs.c.incident_id.in_(open_ids)
        )
    ).all()
    for row in rows:
        key = idempotency_key(row.incident_id, row.opening, row.target)
        conn.execute(sa.update(jobs).where(jobs.c.id == row.id).values(dedup_key=key))


def downgrade() -> None:
    op.drop_index("ix_page_jobs_dedup_key", table_name="page_jobs")
    with op.batch_alter_table("page_jobs") as batch:
        batch.drop_column("dedup_key")
