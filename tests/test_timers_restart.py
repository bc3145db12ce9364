"""Kill -9 with timers pending, start again: every due escalation and reminder fires once."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.support.kafka import EventLog
from tests.support.payloads import alert, body, webhook
from tests.support.service import RULES, free_port


def fast_rules(tmp: Path) -> Path:
    """The shipped rules with SEV-1's clocks in seconds instead of minutes."""
    rules = tmp / "rules"
    shutil.copytree(RULES, rules)
    sev = rules / "severities.yaml"
    sev.write_text(
        sev.read_text().replace(
            # Long enough that the kill comes before the first timer even on a loaded machine
            # (the first page must go out before it), short enough to see five reminders.
            "response_time: 15m\n    follow_up: 30m",
            "response_time: 8s\n    follow_up: 5s",
            1,
        )
    )
    esc = rules / "escalation.yaml"
    esc.write_text(esc.read_text().replace("open_for: 30m", "open_for: 9s"))
    return rules


async def start(env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    while b"incidentd is running" not in (line := await asyncio.wait_for(proc.stdout.readline(), 60)):
        assert line, "service exited during start-up"
    return proc


async def test_sigkill_with_pending_timers_then_restart_fires_each_once(kafka: str, tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:8]
    port = free_port()
    env = {
        **os.environ,
        "INCIDENTD_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "INCIDENTD_KAFKA_ALERTS_TOPIC": f"alerts-{uid}",
        "INCIDENTD_KAFKA_EVENTS_TOPIC": f"events-{uid}",
        "INCIDENTD_KAFKA_DLQ_TOPIC": f"dlq-{uid}",
        "INCIDENTD_KAFKA_COMMANDS_TOPIC": f"commands-{uid}",
        "INCIDENTD_KAFKA_GROUP_ID": f"g-{uid}",
        "INCIDENTD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}",
        "INCIDENTD_RULES_DIR": str(fast_rules(tmp_path)),
        "INCIDENTD_HTTP_PORT": str(port),
        "INCIDENTD_PAGERS": "console",
    }
    first = await start(env)
    events = await EventLog(kafka, f"events-{uid}").start()
    second = None
    try:
        async with httpx.AsyncClient() as client:
            resp = await client.post(
                f"http://127.0.0.1:{port}/api/v1/alerts/alertmanager",
                content=body(webhook(alert("ApiDown", namespace="aragora"))),
            )
            assert resp.status_code == 202
        await events.wait_types({"incident.opened": 1, "page.sent": 1})
        first.send_signal(
            signal.SIGKILL
        )  # timers pending: first [UPDATE] at 5 s, SLA at 6.4 s, overdue at 8 s, 30-"min" at 9 s
        await first.wait()
        assert events.of_type("incident.escalated") == [] and events.of_type("comms.update") == []

        second = await start(env)  # joining the group takes longer than every timer's due time

        def updates() -> list[int]:
            return [
                e["data"]["comms"]["sequence"]
                for e in {x["id"]: x for x in events.of_type("comms.update")}.values()
            ]

        await events.wait_for(
            lambda _: len(events.of_type("incident.escalated")) >= 3 and max(updates(), default=0) >= 5,
            timeout=90,
        )
        second.send_signal(signal.SIGINT)
        await asyncio.wait_for(second.wait(), 60)

        # What the stopped process had stored is all on the topic now; count it all. An event
        # the killed process published but had not yet marked is published again under the
        # same id (at least once, README): count each id once, as a consumer does.
        def unique(suffix: str) -> list[dict[str, Any]]:
            return list({e["id"]: e for e in events.of_type(suffix)}.values())

        rules = Counter(e["data"]["escalation"]["rule"] for e in unique("incident.escalated"))
        assert rules == {"sla-violation-imminent": 1, "response_overdue": 1, "sev1-unresolved-30m": 1}
        sequences = updates()
        assert sorted(sequences) == list(range(1, len(sequences) + 1))  # none lost, none twice
        targets = Counter(
            e["data"]["page"]["target"]
            for e in unique("page.sent")
            if e["data"]["page"]["action"] == "trigger"
        )
        assert targets == {
            "first": 1,
            "sla-violation-imminent": 1,
            "response_overdue": 1,
            "sev1-unresolved-30m": 1,
        }
    finally:
        await events.stop()
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
