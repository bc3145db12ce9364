"""The same pipeline on PostgreSQL: the production store."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.models import IncidentStatus
from service.store.store import Effects, Store
from tests.support.incidents import make_incident
from tests.support.payloads import alert, body, webhook
from tests.support.service import run_service, test_settings


async def test_pipeline_on_postgres_dedups_resolves_and_pages_once(
    kafka: str, tmp_path: Path, pg_url: str
) -> None:
    settings = test_settings(kafka, tmp_path, database_url=pg_url)
    async with run_service(settings) as svc:
        doc = body(webhook(alert("ApiDown", namespace="pg"), alert("ApiDown", namespace="pg", pod="x")))
        for _ in range(3):
            assert (await svc.post_webhook(doc)).status_code == 202
        await svc.events.wait_types({"incident.opened": 1, "page.sent": 1})
        await svc.runtime.progress.wait_records(3)
        assert await svc.runtime.store.incidents.open_counts() == {"SEV-1": 1}
        resolved = [
            alert("ApiDown", status="resolved", namespace="pg"),
            alert("ApiDown", status="resolved", namespace="pg", pod="x"),
        ]
        await svc.post_webhook(body(webhook(*resolved)))
        await svc.events.wait_types({"incident.resolved": 1, "page.sent": 2})
        [opened] = svc.events.of_type("incident.opened")
        inc = await svc.runtime.store.incidents.get(opened["data"]["id"])
        assert inc is not None and inc.status is IncidentStatus.RESOLVED
        jobs = await svc.runtime.store.pages.for_incident(inc.id)
        assert [(j.action, j.status) for j in jobs] == [("trigger", "sent"), ("close", "sent")]


async def test_one_current_incident_per_group_is_enforced_by_the_database(pg_url: str) -> None:
    from datetime import UTC, datetime

    store = Store(pg_url)
    await store.start()
    try:
        now = datetime.now(UTC)

        await store.commit(Effects(incidents=[make_incident("inc-a", "X", "SEV-2", now)]), now)
        # A second replica racing on the same group cannot open a second incident.
        from sqlalchemy.exc import IntegrityError

        with pytest.raises(IntegrityError):
            await store.commit(Effects(incidents=[make_incident("inc-b", "X", "SEV-2", now)]), now)
        key = make_incident(alertname="X").group_key
        assert list(await store.incidents.load_current([key])) == [key]
    finally:
        await store.close()
