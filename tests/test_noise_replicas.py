"""Noise control with two replicas on one PostgreSQL: a silence made through one is seen by
the other, and the lift when it is expired pages once, whichever replica acts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.payloads import alert, body, webhook
from tests.support.service import run_service, test_settings
from tests.test_noise_e2e import of, opened, triggers, wait_event


async def test_a_silence_made_on_one_replica_holds_on_both_and_its_expiry_pages_once(
    kafka: str, pg_url: str, tmp_path: Path
) -> None:
    settings = test_settings(kafka, tmp_path, database_url=pg_url)
    other = settings.model_copy(update={"http_port": 0})
    async with run_service(settings) as one, run_service(other) as two:
        now = datetime.now(UTC)
        silence = {
            "matchers": [{"name": "alertname", "value": "QueueStuck", "isRegex": False, "isEqual": True}],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "alice",
            "comment": "queue migration",
        }
        made = await one.client.post(f"{one.url}/api/v2/silences", json=silence)
        assert made.status_code == 200, made.text
        sid = made.json()["silenceID"]
        listed = await two.client.get(f"{two.url}/api/v2/silences")
        assert [s["id"] for s in listed.json()] == [sid]

        # The alert goes in through the other replica; whichever consumer takes it holds it.
        resp = await two.post_webhook(
            body(webhook(alert("QueueStuck", namespace="jobs", severity="critical")))
        )
        assert resp.status_code == 202
        inc = await opened(one, "QueueStuck")
        await wait_event(one, inc, "incident.suppressed")

        expired = await two.client.delete(f"{two.url}/api/v2/silence/{sid}")
        assert expired.status_code == 200
        await wait_event(one, inc, "incident.unsuppressed")
        await one.events.wait_for(lambda _: len(of(one, inc, "page.sent")) >= 1)
        # Both replicas' noise workers run (the one woken, the other on its own schedule);
        # looked at again by both, the lift is one event and one page.
        await one.runtime.noise.run_once()
        await two.runtime.noise.run_once()
        assert await triggers(one, inc) == [("first", 1)]
        # The timeline is written with the lift itself: one lift, stored once.
        timeline = [t.type for t in await one.runtime.store.outbox.timeline(inc)]
        assert timeline.count("incident.unsuppressed") == 1
