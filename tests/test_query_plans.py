"""SQLite's query plans for what runs per batch and per worker wake-up: each looks rows up
through an index, never by reading a whole table that grows with the deployment's history
(every incident ever stored, every page job sent).

A lookup of the current incidents by group key read every incident, its JSON and all, once
per slice of every batch: the query said ``is_current = 1``, which SQLite does not match to
the partial index's ``WHERE is_current``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from service.models import PageAction
from service.store.outbox import OutboxRecord, TimelineEntry
from service.store.pages import NewPage
from service.store.store import Effects, Store
from tests.support.incidents import make_incident
from tests.support.time import T0

# Tables with a row per incident, page, event or timer of the deployment's history.
GROWING = ("incidents", "page_jobs", "outbox", "timers", "timeline", "remediations")

# Scans that stop early, with why they may.
ALLOWED = {
    # The outbox holds only unpublished events (published ones are removed within 0.1 s): its
    # claim takes the first unleased rows in id order and stops at its LIMIT.
    "SELECT outbox.id FROM outbox WHERE (outbox.lease_until IS NULL",
    # The same few rows, given back at a stop.
    "UPDATE outbox SET lease_until=?, lease_owner=? WHERE outbox.lease_until IS NOT NULL",
}


@contextlib.contextmanager
def statements(db: Path) -> Iterator[list[tuple[str, Any]]]:
    """Every SELECT, UPDATE and DELETE run meanwhile on ``db``, with its (first) parameters.
    Only ``db``'s: a store another test left running in this process (its lease keeper, say)
    may write to its own file meanwhile."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, _cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        many = rest[-1]
        if conn.engine.url.database != str(db):
            return
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            seen.append((statement, parameters[0] if many else parameters))

    event.listen(Engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", capture)


def full_scans(db: Path, statement: str, parameters: Any) -> list[str]:
    """The growing tables the plan reads whole."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    return [step for step in plan if any(step == f"SCAN {table}" for table in GROWING)]


async def test_the_hot_paths_statements_find_rows_by_index(store: Store, tmp_path: Path) -> None:
    inc = make_incident("inc-1", "ApiDown")
    page = NewPage(inc.id, "console", PageAction.TRIGGER, inc.opening)
    events = [
        OutboxRecord("events", b"inc-1", name.encode(), TimelineEntry("inc-1", "x", name))
        for name in ("opened", "updated")
    ]
    with statements(tmp_path / "state.db") as seen:
        assert await store.commit(Effects(incidents=[inc], pages=[page], events=events), T0)
        assert list(await store.incidents.load_current([inc.group_key])) == [inc.group_key]
        assert [i.id for i in await store.incidents.get_many([inc.id])] == [inc.id]
        await store.silences.active(T0)
        jobs = await store.pages.claim_due(T0, 1, 10, set(), {"console"})
        assert [j.incident_id for j in jobs] == [inc.id]
        assert await store.pages.queue.renew_held(T0, lease_seconds=60) == 1
        claim = await store.outbox.claim(T0, 10, 30)
        assert await store.outbox.published([claim.sent()]) == 2
        await store.pages.next_due({"console"}, T0)
        await store.timers.claim_due(T0 + timedelta(minutes=1), 10, 30)
        await store.timers.next_due()
    scans = {
        " ".join(sql.split()): steps
        for sql, parameters in seen
        if (steps := full_scans(tmp_path / "state.db", sql, parameters))
    }
    assert {sql: steps for sql, steps in scans.items() if not sql.startswith(tuple(ALLOWED))} == {}


async def test_the_current_incidents_are_found_through_the_partial_index(
    store: Store, tmp_path: Path
) -> None:
    with statements(tmp_path / "state.db") as seen:
        await store.incidents.load_current(["some group"])
    [(sql, parameters)] = seen
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as conn:
        plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", parameters)]
    assert plan == ["SEARCH incidents USING INDEX uq_incidents_current_group (group_key=?)"]


async def test_a_stop_gives_back_its_leases_without_reading_the_history(store: Store, tmp_path: Path) -> None:
    # Shutdown's release (Leases.release_all) of every queue this process leases from.
    queues = [store.pages.queue, store.timers.queue, store.remediations.queue, store.outbox.queue]
    with statements(tmp_path / "state.db") as seen:
        for queue in queues:
            await queue.release_held()
    assert len(seen) == len(queues)
    scans = {
        " ".join(sql.split()): steps
        for sql, parameters in seen
        if (steps := full_scans(tmp_path / "state.db", sql, parameters))
    }
    assert {sql: steps for sql, steps in scans.items() if not sql.startswith(tuple(ALLOWED))} == {}
