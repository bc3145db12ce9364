"""The Jira follow-up ticket: through httpx against a local stand-in, through the page
worker (retries, one ticket), and through the running service."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from service.clock import ManualClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.models import IncidentStatus, PageAction, Phase
from service.notify.base import PageError, PageRequest, idempotency_key
from service.notify.jira import JiraNotifier, describe
from service.notify.worker import PageWorker
from service.observability.metrics import Metrics
from service.ruleset import RuleSet
from service.store.pages import NewPage
from service.store.store import Effects, Store
from tests.support.incidents import make_incident
from tests.support.jira_api import FakeJira, Reply
from tests.support.payloads import alert, body, webhook
from tests.support.service import run_service, test_settings
from tests.support.time import T0

LABEL = idempotency_key("inc-j", 1)


def request(action: str = "close", target: str = "first", **snapshot: Any) -> PageRequest:
    inc = make_incident("inc-j")
    return PageRequest(
        action=PageAction(action),
        incident={**inc.snapshot(), **snapshot},
        opening=1,
        idempotency_key=idempotency_key(inc.id, 1, target),
        message="[RESOLVED] SEV-1: ApiDown",
        description="",
        priority="P1",
        target=target,
    )


def jira(fake: FakeJira, timeout: float = 5, create_retry: float = 0.0) -> JiraNotifier:
    """Retries after a failed create at the pager's own pace here (tests do not wait 30 s)."""
    j = JiraNotifier(fake.url, ("bot@example.com", "TOKEN"), "OPS", "Task", timeout)
    j.create_retry_seconds = create_retry
    return j


@pytest.fixture
async def fake():  # type: ignore[no-untyped-def]
    async with FakeJira() as server:
        yield server


async def test_close_creates_one_issue_with_the_summary_and_action_items(fake: FakeJira) -> None:
    j = jira(fake)
    items = [
        {"item": "Add an alert on queue depth", "owner": "alice", "due": "2026-12-09"},
        {"item": "Write the postmortem", "owner": "bob"},
    ]
    snapshot = {
        "resolved_at": "2026-11-26T11:05:00Z",
        "duration_seconds": 3900,
        "response_met": True,
        "root_cause": "bad deploy",
        "roles": {"Incident Commander": "carol"},
        "action_items": items,
    }
    try:
        assert await j.send(request(**snapshot)) == "OPS-1"
        [issue] = fake.issues
        fields = issue["fields"]
        assert fields["project"] == {"key": "OPS"} and fields["issuetype"] == {"name": "Task"}
        assert fields["summary"] == "[INCIDENT] SEV-1: ApiDown (inc-j)"
        assert LABEL in fields["labels"] and LABEL.startswith("incidentd-")
        text = fields["description"]
        for needle in (
            "Severity: SEV-1",
            "Duration: 1h5m",
            "Response time: met",
            "Root cause: bad deploy",
            "Incident Commander: carol",
            "- Add an alert on queue depth (owner: alice, due: 2026-12-09)",
            "- Write the postmortem (owner: bob)",
        ):
            assert needle in text, needle
        assert {r.auth for r in fake.requests} == {"bot@example.com:TOKEN"}
        # Sent again (a retry after a lost answer): the search finds it, no second issue.
        assert await j.send(request(**snapshot)) == "OPS-1"
        assert len(fake.issues) == 1 and len(fake.creates()) == 1
    finally:
        await j.aclose()


async def test_triggers_acks_and_closes_of_other_pages_call_nothing(fake: FakeJira) -> None:
    j = jira(fake)
    try:
        assert await j.send(request("trigger")) is None
        assert await j.send(request("ack")) is None
        assert await j.send(request("update", target="reminder:1")) is None
        assert await j.send(request("close", target="backup:first")) is None
        assert fake.requests == []
    finally:
        await j.aclose()


def test_description_without_action_items_or_commander() -> None:
    inc = make_incident("inc-d")
    inc.resolved_at = inc.opened_at + timedelta(minutes=30)
    text = describe(inc.snapshot())
    assert "Duration: 30m" in text and "Incident Commander: not assigned" in text
    assert "Root cause: not recorded" in text and "- none recorded" in text


@pytest.mark.parametrize(("retry_after_header", "waits"), [(None, 30.0), ("60", 60.0)])
async def test_a_retry_after_a_failed_create_waits_for_the_search_to_catch_up(
    fake: FakeJira, retry_after_header: str | None, waits: float
) -> None:
    headers = (("Retry-After", retry_after_header),) if retry_after_header else ()
    fake.script("POST", Reply(503, {"errorMessages": ["down"]}, headers))
    j = JiraNotifier(fake.url, ("bot@example.com", "TOKEN"), "OPS", "Task", 5)
    try:
        with pytest.raises(PageError) as info:
            await j.send(request())
        assert info.value.retryable and info.value.retry_after == waits
    finally:
        await j.aclose()


@pytest.mark.parametrize(
    ("reply", "retryable", "retry_after"),
    [
        (Reply(503, {"errorMessages": ["down"]}), True, None),
        (Reply(429, {}, (("Retry-After", "30"),)), True, 30.0),
        (Reply(400, {"errorMessages": [], "errors": {"issuetype": "invalid"}}), False, None),
        (Reply(401, {"errorMessages": ["no"]}), False, None),
    ],
)
async def test_create_errors_are_classified_and_create_nothing(
    fake: FakeJira, reply: Reply, retryable: bool, retry_after: float | None
) -> None:
    fake.script("POST", reply)
    j = jira(fake)
    try:
        with pytest.raises(PageError) as info:
            await j.send(request())
        assert info.value.retryable is retryable and info.value.retry_after == retry_after
        assert f"HTTP {reply.status}" in info.value.reason
        assert fake.issues == []
    finally:
        await j.aclose()


async def test_a_failed_search_is_retryable_and_creates_nothing(fake: FakeJira) -> None:
    fake.script("GET", Reply(502))
    j = jira(fake)
    try:
        with pytest.raises(PageError) as info:
            await j.send(request())
        assert info.value.retryable and fake.creates() == []
    finally:
        await j.aclose()


async def test_data_center_search_path_is_the_fallback() -> None:
    async with FakeJira(cloud=False) as dc:
        j = jira(dc)
        try:
            assert await j.send(request()) == "OPS-1"
            assert await j.send(request()) == "OPS-1"
            paths = [r.path for r in dc.requests if r.method == "GET"]
            assert paths == ["/rest/api/2/search/jql", "/rest/api/2/search"] * 2
            assert len(dc.issues) == 1
        finally:
            await j.aclose()


def test_settings_are_required_and_secrets_not_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"INCIDENTD_JIRA_URL.*INCIDENTD_JIRA_PROJECT"):
        JiraNotifier.from_settings(Settings())
    token = tmp_path / "token"
    token.write_text("T0KEN\n")
    ok = Settings(
        jira_url="https://x.atlassian.net", jira_email="a@b", jira_api_token_file=token, jira_project="OPS"
    )
    assert isinstance(JiraNotifier.from_settings(ok), JiraNotifier)
    with pytest.raises(ValueError, match="non-empty project"):
        JiraNotifier("https://x", ("a@b", "t"), " ")


# --- through the page worker -------------------------------------------------------------


def page_worker(store: Store, rules: RuleSet, notifier: JiraNotifier, clock: ManualClock) -> PageWorker:
    settings = Settings(page_backoff_initial_seconds=10, page_backoff_max_seconds=60)
    ctx = Context(store, rules, EventFactory("events", "io.incidentd", "/test"), clock, Metrics(), settings)
    return PageWorker(ctx, {"jira": notifier})


async def tick(w: PageWorker) -> int:
    started = await w.run_once()
    await w.drain()
    return started


async def test_worker_closes_without_a_trigger_and_retries_into_one_ticket(
    store: Store, rules: RuleSet, fake: FakeJira
) -> None:
    # The first create is lost (the stand-in creates, then a proxy answers 504), the retry
    # finds it by its label; a trigger and an ack to Jira are superseded without a call.
    fake.script("POST", Reply(504, {"errorMessages": ["gateway timeout"]}, commit=True))
    clock, j = ManualClock(T0), jira(fake)
    inc = make_incident("inc-w")
    inc.status, inc.resolved_at, inc.phase = (
        IncidentStatus.RESOLVED,
        T0 + timedelta(minutes=20),
        Phase.RESOLVED,
    )
    pages = [NewPage("inc-w", "jira", PageAction(a), 1) for a in ("trigger", "ack", "close")]
    await store.commit(Effects(incidents=[inc], pages=pages), T0)
    w = page_worker(store, rules, j, clock)
    try:
        for _ in range(3):
            await tick(w)
        assert [(p.action, p.status) for p in await store.pages.for_incident("inc-w")] == [
            ("trigger", "superseded"),
            ("ack", "superseded"),
            ("close", "pending"),
        ]
        clock.advance(timedelta(seconds=13))
        assert await tick(w) == 1
        assert [p.status for p in await store.pages.for_incident("inc-w")][-1] == "sent"
        assert len(fake.issues) == 1 and len(fake.creates()) == 1
        timeline = [json.loads(r.value) for r in await store.outbox.unpublished(100)]
        parts = [(e["type"].rsplit(".", 1)[-1], e["data"]["page"]) for e in timeline]
        assert [(t, p["action"], p["attempt"]) for t, p in parts] == [
            ("failed", "close", 1),
            ("sent", "close", 2),
        ]
        assert parts[0][1]["retrying"] is True and "HTTP 504" in parts[0][1]["error"]
        assert parts[1][1]["reference"] == "OPS-1"
        assert parts[1][1]["idempotency_key"] == idempotency_key("inc-w", 1)
    finally:
        await j.aclose()


# --- through the service ------------------------------------------------------------------


async def test_service_opens_and_resolves_then_files_exactly_one_ticket_despite_a_503(
    kafka: str, tmp_path: Path, fake: FakeJira
) -> None:
    fake.script("POST", Reply(503, {"errorMessages": ["Service Unavailable"]}))
    settings = test_settings(kafka, tmp_path, pagers=["jira"])
    j = jira(fake)
    async with run_service(settings, notifiers={"jira": j}) as svc:
        assert (await svc.post_webhook(body(webhook(alert("ApiDown", namespace="jira"))))).status_code == 202
        await svc.events.wait_types({"incident.opened": 1})
        [opened] = svc.events.of_type("incident.opened")
        resolved = alert("ApiDown", status="resolved", ends_at="2026-11-26T10:05:00Z", namespace="jira")
        assert (await svc.post_webhook(body(webhook(resolved)))).status_code == 202
        await svc.events.wait_types({"page.failed": 1, "page.sent": 1})
        failed = svc.events.of_type("page.failed")[0]["data"]["page"]
        sent = svc.events.of_type("page.sent")[0]["data"]["page"]
        assert (failed["integration"], failed["action"], failed["retrying"]) == ("jira", "close", True)
        assert (sent["integration"], sent["action"], sent["attempt"]) == ("jira", "close", 2)
        assert sent["reference"] == "OPS-1"
        [issue] = fake.issues
        inc = opened["data"]
        assert issue["fields"]["summary"] == f"[INCIDENT] SEV-1: {inc['title']} ({inc['id']})"
        assert "Severity: SEV-1" in issue["fields"]["description"]
        assert "Action items:" in issue["fields"]["description"]
        # No page.* for Jira's superseded trigger: the timeline shows the close only.
        assert all(e["data"]["page"]["action"] == "close" for e in svc.events.of_type("page.sent"))

        # The postmortem names an action item after the resolve: a comment on the ticket, once,
        # though Jira answers the first try with a 503.
        fake.script("POST", Reply(503, {"errorMessages": ["Service Unavailable"]}))
        added = await svc.client.post(
            f"{svc.url}/api/v1/incidents/{inc['id']}/action-items",
            json={"item": "Alert on queue depth", "owner": "alice", "due": "2026-12-09", "by": "carol"},
        )
        assert added.status_code == 200, added.text
        await svc.events.wait_types({"page.failed": 2, "page.sent": 2})
        failed = svc.events.of_type("page.failed")[1]["data"]["page"]
        sent = svc.events.of_type("page.sent")[1]["data"]["page"]
        assert (failed["target"], failed["retrying"], sent["target"]) == (
            "action_item:1",
            True,
            "action_item:1",
        )
        assert sent["reference"] == "OPS-1"
        assert fake.comment_bodies("OPS-1") == [
            "Action item added after the incident was resolved:\n"
            "- Alert on queue depth (owner: alice, due: 2026-12-09)\n\n"
            f"({idempotency_key(inc['id'], 1, 'action_item:1')})"
        ]
