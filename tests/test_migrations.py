"""The schema comes from versioned migrations, on SQLite and PostgreSQL: a new database,
one made by incidentd 0.1.0, replicas migrating at once, and a check-only start."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, insert, inspect, text

from service.store import schema
from service.store.database import Database
from service.store.store import Store
from service.store.tables import metadata, outbox

INCIDENTD = str(Path(sys.executable).with_name("incidentd"))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_url"))


def _differences(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_migrations_build_exactly_the_tables_the_code_uses(url: str) -> None:
    db = Database(url)
    try:
        before, now = await schema.upgrade(db)
        assert (before, now) == (None, schema.head())
        async with db.read() as conn:
            assert await conn.run_sync(_differences) == []
        assert await schema.upgrade(db) == (now, now)  # a second run changes nothing
    finally:
        await db.close()


def _as_0_1_0_made_it(conn: Connection) -> None:
    """What 0.1.0's create_all left: the first revision's tables and no version table."""
    command.upgrade(schema.alembic_config(conn), schema.BEFORE_MIGRATIONS)
    conn.execute(text("DROP TABLE alembic_version"))


async def test_a_database_made_before_migrations_is_brought_up_to_date(url: str) -> None:
    db = Database(url)
    try:
        async with db.write() as conn:
            await conn.run_sync(_as_0_1_0_made_it)
            row = {"topic": "t", "key": b"inc-1", "value": b"{}", "created_at": 1.0}
            await conn.execute(insert(outbox).values(**row))
        assert "lease_until" not in await _outbox_columns(db)
        assert await schema.upgrade(db) == (schema.BEFORE_MIGRATIONS, schema.head())
        assert {"lease_until", "lease_owner"} <= await _outbox_columns(db)
    finally:
        await db.close()
    store = Store(url)
    try:
        await store.start()
        assert [r.key for r in await store.outbox.unpublished(10)] == [b"inc-1"]  # kept
    finally:
        await store.close()


async def _outbox_columns(db: Database) -> set[str]:
    async with db.read() as conn:
        columns = await conn.run_sync(lambda c: inspect(c).get_columns("outbox"))
    return {c["name"] for c in columns}


async def test_a_check_only_start_refuses_an_old_schema_and_runs_on_a_current_one(url: str) -> None:
    store = Store(url)
    try:
        with pytest.raises(schema.SchemaError, match="run `incidentd db upgrade`"):
            await store.start(migrate=False)
        await schema.upgrade(store.db)
        await store.start(migrate=False)
    finally:
        await store.close()


async def test_replicas_migrating_at_once_on_an_empty_postgresql_all_succeed(pg_url: str) -> None:
    env = {**os.environ, "INCIDENTD_DATABASE_URL": pg_url}
    procs = [
        await asyncio.create_subprocess_exec(
            INCIDENTD,
            "db",
            "upgrade",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    results = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 60)
    assert [p.returncode for p in procs] == [0, 0, 0], [err.decode() for _, err in results]
    assert all(f"database schema at {schema.head()}" in out.decode() for out, _ in results)
    current = await asyncio.create_subprocess_exec(
        INCIDENTD, "db", "current", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await current.communicate()
    assert current.returncode == 0 and schema.head() in out.decode()
