"""What a start pays for: a start on SQLite with the console pager, on a database already at
this version's schema, imports neither Alembic, nor PostgreSQL's driver, nor Opsgenie's SDK
(together a quarter of a second of a two-second start on a slow machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from service.store import schema

INCIDENTD = str(Path(sys.executable).with_name("incidentd"))

# What `incidentd run` imports and does up to serving, short of Kafka: its modules, the
# pagers INCIDENTD_PAGERS names, the schema's upgrade at start.
START = """
import asyncio, json, sys
import service.cli, service.runtime, service.http.app
from service.config import Settings
from service.notify.registry import build_notifiers
from service.store import schema
from service.store.database import Database

async def start():
    build_notifiers(Settings())
    db = Database(Settings().database_url)
    try:
        return await schema.upgrade(db)
    finally:
        await db.close()

revisions = asyncio.run(start())
late = ["alembic", "asyncpg", "opsgenie_sdk", "urllib3"]
print(json.dumps({"revisions": revisions, "imported": [m for m in late if m in sys.modules]}))
"""


def _start(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", START], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def _env(tmp_path: Path, pagers: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENTD_")}
    return {
        **env,
        "INCIDENTD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}",
        "INCIDENTD_PAGERS": pagers,
        "INCIDENTD_OPSGENIE_API_KEY": "k",
    }


def test_the_head_constant_is_alembics_last_migration() -> None:
    assert schema.HEAD == schema.head()


def test_a_start_on_a_current_database_imports_only_what_it_uses(tmp_path: Path) -> None:
    env = _env(tmp_path, "console")
    upgraded = subprocess.run(
        [INCIDENTD, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert _start(env) == {"revisions": [schema.HEAD, schema.HEAD], "imported": []}


def test_a_new_database_and_a_configured_pager_import_what_they_need(tmp_path: Path) -> None:
    # The control: the same start on an empty database migrates it (Alembic), and with
    # INCIDENTD_PAGERS=opsgenie builds the SDK's pager.
    started = _start(_env(tmp_path, "console,opsgenie"))
    assert started == {"revisions": [None, schema.HEAD], "imported": ["alembic", "opsgenie_sdk", "urllib3"]}
