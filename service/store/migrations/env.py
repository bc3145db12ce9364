"""Alembic's environment: migrations run on the connection service.store.schema hands
over (inside its transaction and, on PostgreSQL, its advisory lock)."""

from __future__ import annotations

from alembic import context

from service.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
