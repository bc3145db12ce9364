"""The database schema's version: Alembic migrations in ``migrations/``.

``incidentd run`` upgrades the schema at start (or, with ``INCIDENTD_DATABASE_MIGRATE=false``,
only checks it is current, for deployments that migrate in a separate step:
``incidentd db upgrade``, a Helm pre-upgrade hook). Replicas starting together on an empty
PostgreSQL take turns on an advisory lock, so one creates the schema and the others find
it done. A database made by incidentd 0.1.0 (before migrations) is recognised and brought
up to date.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

from service.store.database import Database

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# PostgreSQL advisory-lock key for migrations ("incidentd schema").
MIGRATION_LOCK = 0x1D0B0C6
# What incidentd 0.1.0's create_all made; a database with it but no version is that.
BEFORE_MIGRATIONS = "0001"
# The last migration's revision (a test holds it to Alembic's own head). A database at it
# starts without importing Alembic at all: its imports were a twentieth of the start-up.
HEAD = "0007"


class SchemaError(Exception):
    """The schema is not one this version can run on; the message says what to do."""


def alembic_config(conn: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def _current(conn: Connection) -> str | None:
    """The revision in Alembic's version table, read as Alembic reads it (one row, or none)
    without importing Alembic."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _upgrade(conn: Connection) -> tuple[str | None, str]:
    before = _current(conn)
    if before == HEAD:
        return before, before
    from alembic import command

    if before is None and "incidents" in set(inspect(conn).get_table_names()):
        command.stamp(alembic_config(conn), BEFORE_MIGRATIONS)
        before = BEFORE_MIGRATIONS
    command.upgrade(alembic_config(conn), "head")
    return before, head()


async def upgrade(db: Database) -> tuple[str | None, str]:
    """Bring the schema to this version's; returns (revision before, revision now)."""
    async with db.write() as conn:
        if db.postgres:
            # Held until this transaction ends: the other replicas wait, then find it done.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        else:
            # WAL lets the HTTP readiness probe read while the consumer writes.
            await conn.execute(text("PRAGMA journal_mode=WAL"))
        before, now = await conn.run_sync(_upgrade)
    if before != now:
        log.info("database schema upgraded from %s to %s", before or "(empty)", now)
    return before, now


async def current(db: Database) -> str | None:
    async with db.read() as conn:
        return await conn.run_sync(_current)


async def check(db: Database) -> None:
    """Raise :class:`SchemaError` unless the schema is this version's (or newer)."""
    revision = await current(db)
    if revision == HEAD:
        return
    from alembic.script import ScriptDirectory

    wanted = head()
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if revision is not None and revision not in known:
        # A newer incidentd migrated it (a rolling upgrade): changes are additive within a
        # major version, so this one can still run on it.
        log.warning("database schema %s is newer than this version's %s", revision, wanted)
        return
    raise SchemaError(
        f"database schema is at {revision or '(none)'}, this version needs {wanted}: "
        "run `incidentd db upgrade` (or set INCIDENTD_DATABASE_MIGRATE=true)"
    )
