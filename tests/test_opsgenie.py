"""The Opsgenie pager, through the real ``opsgenie-sdk``, against a real HTTP server.

``tests.support.opsgenie_api.FakeOpsgenie`` stands in for the Opsgenie Alert API; the
SDK, urllib3 and the sockets between them are the real ones.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from service.notify.base import Notifier, PageError, PageRequest, idempotency_key
from service.notify.opsgenie import OpsgenieNotifier
from service.ruleset import RuleSet
from tests.support.opsgenie_api import FakeOpsgenie, RecordedRequest, Reply
from tests.support.payloads import alert, body, webhook
from tests.support.service import run_service, test_settings

KEY = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
TIMEOUT = 10.0


def page_request(
    rules: RuleSet,
    action: str = "trigger",
    *,
    severity: str = "SEV-1",
    title: str = "API is down",
    alertname: str = "ApiDown",
) -> PageRequest:
    """A PageRequest as the page worker builds it: the real template and severity table."""
    incident_id = f"inc-{uuid.uuid4().hex[:12]}"
    incident: dict[str, Any] = {
        "id": incident_id,
        "title": title,
        "impact": "Complete service outage: users cannot use the product",
        "severity": severity,
        "status": "open" if action == "trigger" else "resolved",
        "group_key": f'{{alertname="{alertname}",namespace="aragora"}}',
        "group_labels": {"alertname": alertname, "namespace": "aragora"},
        "fingerprints": ["a1b2c3d4e5f60718"],
        "firing_fingerprints": ["a1b2c3d4e5f60718"] if action == "trigger" else [],
        "opening": 1,
        "opened_at": "2026-11-26T10:00:00Z",
        "acknowledged_at": None,
        "resolved_at": None if action == "trigger" else "2026-11-26T10:05:00Z",
        "response_due_at": "2026-11-26T10:15:00Z",
    }
    template = rules.templates.incident if action == "trigger" else rules.templates.close_note
    text = template.render(incident={**incident, "alert_count": 1, "commander": None}).strip()
    message, _, description = text.partition("\n")
    return PageRequest(
        action="trigger" if action == "trigger" else "close",
        incident=incident,
        opening=1,
        idempotency_key=idempotency_key(incident_id, 1),
        message=message,
        description=description,
        priority=rules.severity(severity).opsgenie_priority,
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpsgenie]:
    async with FakeOpsgenie() as api:
        yield api


@pytest.fixture
async def notifier(fake: FakeOpsgenie) -> AsyncIterator[OpsgenieNotifier]:
    n = OpsgenieNotifier(KEY, fake.url, TIMEOUT)
    yield n
    await n.aclose()


async def failure(notifier: OpsgenieNotifier, request: PageRequest) -> PageError:
    with pytest.raises(PageError) as caught:
        await notifier.send(request)
    return caught.value


# -- the notifier against the API ------------------------------------------------------


async def test_trigger_creates_one_alert_with_genie_key_alias_and_priority(
    fake: FakeOpsgenie, notifier: OpsgenieNotifier, rules: RuleSet
) -> None:
    request = page_request(rules, severity="SEV-1")

    reference = await notifier.send(request)

    [sent] = fake.requests
    assert (sent.method, sent.path, sent.endpoint) == ("POST", "/v2/alerts", "create")
    assert sent.header("Authorization") == f"GenieKey {KEY}"
    assert sent.header("Content-Type") == "application/json"
    payload = sent.body
    assert payload["alias"] == request.idempotency_key
    assert payload["priority"] == "P1"
    assert payload["message"].startswith("[INCIDENT] SEV-1:")
    assert payload["message"] == "[INCIDENT] SEV-1: API is down"
    assert "Impact: Complete service outage" in payload["description"]
    assert payload["source"] == "incidentd"
    assert payload["entity"] == request.incident_id
    assert payload["details"]["incident_id"] == request.incident_id
    assert payload["details"]["severity"] == "SEV-1"
    assert payload["details"]["alertname"] == "ApiDown"
    assert payload["tags"] == ["SEV-1", "alertname:ApiDown", "namespace:aragora"]
    # The reference is the requestId Opsgenie answered with.
    [answer] = fake.answers
    assert answer.status == 202
    assert reference == answer.request_id
    [created] = fake.alerts
    assert (created.alias, created.priority, created.status) == (request.idempotency_key, "P1", "open")


async def test_ack_acknowledges_the_alert_by_alias(
    fake: FakeOpsgenie, notifier: OpsgenieNotifier, rules: RuleSet
) -> None:
    trigger = page_request(rules)
    await notifier.send(trigger)
    ack = PageRequest(
        action="ack",
        incident=trigger.incident,
        opening=trigger.opening,
        idempotency_key=trigger.idempotency_key,
        message="[UPDATE] SEV-1: API is down",
        description="- Status: Acknowledged by alice",
        priority=trigger.priority,
    )
    await notifier.send(ack)
    [_, acking] = fake.requests
    assert (acking.endpoint, acking.path) == (
        "acknowledge",
        f"/v2/alerts/{trigger.idempotency_key}/acknowledge",
    )
    assert acking.query == {"identifierType": ["alias"]}
    assert acking.body == {"source": "incidentd", "note": "- Status: Acknowledged by alice"}
    [alert] = fake.alerts
    assert (alert.status, alert.acknowledged) == ("open", True)


async def test_close_posts_to_the_close_endpoint_by_alias(
    fake: FakeOpsgenie, notifier: OpsgenieNotifier, rules: RuleSet
) -> None:
    trigger = page_request(rules)
    await notifier.send(trigger)
    close = PageRequest(
        action="close",
        incident=trigger.incident,
        opening=trigger.opening,
        idempotency_key=trigger.idempotency_key,
        message="[UPDATE] SEV-1: API is down",
        description="- Status: Resolved",
        priority=trigger.priority,
    )

    reference = await notifier.send(close)

    [_, closing] = fake.requests
    assert (closing.method, closing.endpoint) == ("POST", "close")
    assert closing.path == f"/v2/alerts/{trigger.idempotency_key}/close"
    assert closing.query == {"identifierType": ["alias"]}
    assert closing.header("Authorization") == f"GenieKey {KEY}"
    assert closing.body == {"source": "incidentd", "note": "[UPDATE] SEV-1: API is down"}
    assert reference == fake.answers[-1].request_id
    [closed] = fake.alerts
    assert (closed.alias, closed.status) == (trigger.idempotency_key, "closed")


async def test_fake_deduplicates_creates_by_open_alias_as_opsgenie_does(
    fake: FakeOpsgenie, notifier: OpsgenieNotifier, rules: RuleSet
) -> None:
    request = page_request(rules)
    await notifier.send(request)
    await notifier.send(request)

    assert len(fake.accepted("create", request.idempotency_key)) == 2
    [only] = fake.alerts
    assert only.count == 2  # the second create was deduplicated: one page, not two

    close = PageRequest("close", request.incident, 1, request.idempotency_key, "[UPDATE]", "", "P1")
    await notifier.send(close)
    await notifier.send(request)  # the alias is no longer open: this is a new alert
    assert [a.status for a in fake.alerts_with(request.idempotency_key)] == ["closed", "open"]


async def test_throttled_answer_is_retryable_and_carries_retry_after(
    fake: FakeOpsgenie, notifier: OpsgenieNotifier, rules: RuleSet
) -> None:
    fake.script("create", Reply(429, headers={"Retry-After": "7"}))

    err = await failure(notifier, page_request(rules))

    assert err.retryable is True
    assert err.retry_after == 7.0
    assert "429" in err.reason
    assert len(fake.requests) == 1  # the SDK's own retry loop is off


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(
    fake: FakeOpsgenie, notifier: OpsgenieNotifier, rules: RuleSet, status: int
) -> None:
    fake.script("create", Reply(status))

    err = await failure(notifier, page_request(rules))

    assert err.retryable is True
    assert f"HTTP {status}" in err.reason
    assert err.retry_after is None
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 422])
async def test_rejected_requests_are_not_retryable(
    fake: FakeOpsgenie, notifier: OpsgenieNotifier, rules: RuleSet, status: int
) -> None:
    fake.script("create", Reply(status))

    err = await failure(notifier, page_request(rules))

    assert err.retryable is False
    assert f"HTTP {status}" in err.reason
    assert len(fake.requests) == 1
    assert not fake.alerts


async def test_a_key_opsgenie_does_not_know_is_not_retryable(rules: RuleSet) -> None:
    async with FakeOpsgenie(api_keys={KEY}) as fake:
        wrong = OpsgenieNotifier("revoked-key", fake.url, TIMEOUT)
        try:
            err = await failure(wrong, page_request(rules))
        finally:
            await wrong.aclose()
        [answer] = fake.answers
    assert answer.status == 401
    assert answer.request.header("Authorization") == "GenieKey revoked-key"
    assert err.retryable is False
    assert "HTTP 401" in err.reason


def test_an_empty_key_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="empty"):
        OpsgenieNotifier("  ", "http://127.0.0.1:9", TIMEOUT)


@pytest.mark.parametrize(("status", "retryable"), [(403, False), (404, False), (502, True), (504, True)])
async def test_error_pages_that_are_not_json_keep_their_status(
    fake: FakeOpsgenie, notifier: OpsgenieNotifier, rules: RuleSet, status: int, retryable: bool
) -> None:
    # What a proxy or load balancer in front of Opsgenie answers: HTML, not Opsgenie's JSON.
    fake.script("create", Reply(status, raw=b"<html><body>Forbidden by proxy</body></html>"))

    err = await failure(notifier, page_request(rules))

    assert err.retryable is retryable
    assert f"HTTP {status}" in err.reason and "proxy" in err.reason
    assert len(fake.requests) == 1


@pytest.mark.parametrize(("header", "expected"), [("0", 0.0), ("120", 120.0), ("soon", None), ("inf", None)])
async def test_retry_after_values(
    fake: FakeOpsgenie, notifier: OpsgenieNotifier, rules: RuleSet, header: str, expected: float | None
) -> None:
    fake.script("create", Reply(429, headers={"Retry-After": header}))

    err = await failure(notifier, page_request(rules))

    assert err.retryable is True
    assert err.retry_after == expected


async def test_connection_refused_is_retryable(rules: RuleSet) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but never listening: every connect is refused
        port = sock.getsockname()[1]
        unreachable = OpsgenieNotifier(KEY, f"http://127.0.0.1:{port}", TIMEOUT)
        try:
            err = await failure(unreachable, page_request(rules))
        finally:
            await unreachable.aclose()
    assert err.retryable is True
    assert "unreachable" in err.reason
    assert err.retry_after is None


async def test_connection_dropped_without_answer_is_retryable_and_not_resent(
    fake: FakeOpsgenie, notifier: OpsgenieNotifier, rules: RuleSet
) -> None:
    fake.script("create", Reply(drop=True))

    err = await failure(notifier, page_request(rules))

    assert err.retryable is True
    assert "unreachable" in err.reason
    assert len(fake.requests) == 1


async def test_hung_api_times_out_as_retryable(fake: FakeOpsgenie, rules: RuleSet) -> None:
    never = threading.Event()  # set only when the fake shuts down
    fake.script("create", Reply(hold=never))
    impatient = OpsgenieNotifier(KEY, fake.url, 0.5)
    try:
        err = await asyncio.wait_for(failure(impatient, page_request(rules)), 10)
    finally:
        await impatient.aclose()
    assert not never.is_set()
    assert err.retryable is True
    assert "unreachable" in err.reason and "timed out" in err.reason.lower()
    assert len(fake.requests) == 1


async def test_send_runs_off_the_event_loop(
    fake: FakeOpsgenie, notifier: OpsgenieNotifier, rules: RuleSet
) -> None:
    release = threading.Event()
    fake.script("create", Reply(hold=release))
    sending = asyncio.create_task(notifier.send(page_request(rules)))
    # The create reached the server, which holds its answer until we release it. Were the
    # SDK call made on the loop, this wait could not even run until the call returned.
    await fake.wait_for(lambda: len(fake.requests) == 1)

    progressed = asyncio.Event()

    async def other_work() -> None:
        progressed.set()

    other = asyncio.create_task(other_work())
    await asyncio.wait_for(progressed.wait(), 5)
    assert not sending.done()  # another task ran while send() was still waiting for Opsgenie
    assert fake.answers == []

    release.set()
    reference = await asyncio.wait_for(sending, 10)
    await other
    assert reference == fake.answers[0].request_id


async def test_two_notifiers_send_with_their_own_keys(fake: FakeOpsgenie, rules: RuleSet) -> None:
    first = OpsgenieNotifier("key-of-team-a", fake.url, TIMEOUT)
    second = OpsgenieNotifier("key-of-team-b", fake.url, TIMEOUT)  # built after, must not overwrite
    try:
        a, b = page_request(rules), page_request(rules)
        await first.send(a)
        await second.send(b)
        await asyncio.gather(first.send(a), second.send(b))  # and concurrently, from two threads
    finally:
        await first.aclose()
        await second.aclose()

    keys = {
        alias: {r.header("Authorization") for r in fake.requests_to("create", alias)}
        for alias in (a.idempotency_key, b.idempotency_key)
    }
    assert keys == {
        a.idempotency_key: {"GenieKey key-of-team-a"},
        b.idempotency_key: {"GenieKey key-of-team-b"},
    }
    assert {x.alias: x.api_key for x in fake.alerts} == {
        a.idempotency_key: "key-of-team-a",
        b.idempotency_key: "key-of-team-b",
    }


# -- through the whole service on the real broker ---------------------------------------


def _is_alert(alertname: str) -> Callable[[RecordedRequest], bool]:
    def match(request: RecordedRequest) -> bool:
        return bool(request.body["details"]["alertname"] == alertname)

    return match


def _pages(events: list[dict[str, Any]], incident_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (e["type"].rsplit(".", 1)[-1], e["data"]["page"])
        for e in events
        if e["type"].split(".")[-2] == "page" and e["data"]["id"] == incident_id
    ]


async def test_service_retries_a_failing_page_without_holding_up_other_incidents(
    kafka: str, tmp_path: Path
) -> None:
    settings = test_settings(kafka, tmp_path, pagers=["opsgenie"])
    async with FakeOpsgenie() as fake:
        release = threading.Event()
        # Only ApiDown's creates fail, twice; its first answer is held until we let it go.
        fake.script("create", Reply(503, hold=release), Reply(503), when=_is_alert("ApiDown"))
        notifiers: dict[str, Notifier] = {"opsgenie": OpsgenieNotifier(KEY, fake.url, TIMEOUT)}
        async with run_service(settings, notifiers=notifiers) as svc:
            assert (
                await svc.post_webhook(body(webhook(alert("ApiDown", namespace="aragora"))))
            ).status_code == 202
            await fake.wait_for(lambda: len(fake.requests_to("create")) == 1)

            # ApiDown's page is in flight and failing; SlowResponses is paged meanwhile.
            slow = body(webhook(alert("SlowResponses", namespace="aragora")))
            assert (await svc.post_webhook(slow)).status_code == 202
            await svc.events.wait_types({"page.sent": 1})
            [slow_sent] = svc.events.of_type("page.sent")
            assert slow_sent["data"]["severity"] == "SEV-3"
            assert svc.events.of_type("page.failed") == []  # ApiDown's first try has not even answered
            slow_alias = slow_sent["data"]["page"]["idempotency_key"]
            assert [(a.request.identifier, a.status) for a in fake.answers] == [(slow_alias, 202)]
            [slow_alert] = fake.alerts_with(slow_alias)
            assert slow_alert.priority == "P3"

            release.set()
            await svc.events.wait_types({"page.failed": 2, "page.sent": 2})

            [opened] = [e for e in svc.events.of_type("incident.opened") if e["data"]["severity"] == "SEV-1"]
            api_down = opened["data"]["id"]
            pages = _pages(svc.events.events, api_down)
            assert [(kind, p["attempt"], p["retrying"]) for kind, p in pages] == [
                ("failed", 1, True),
                ("failed", 2, True),
                ("sent", 3, False),
            ]
            assert all("HTTP 503" in p["error"] for kind, p in pages if kind == "failed")
            alias = pages[-1][1]["idempotency_key"]
            assert {p["idempotency_key"] for _, p in pages} == {alias}
            assert pages[-1][1]["reference"] == fake.accepted("create", alias)[0].request_id

            # Three creates reached Opsgenie for that alias, one was accepted: one alert, P1.
            assert [a.status for a in fake.answers if a.request.identifier == alias] == [503, 503, 202]
            [api_alert] = fake.alerts_with(alias)
            assert (api_alert.priority, api_alert.count) == ("P1", 1)
            assert api_alert.message.startswith("[INCIDENT] SEV-1:")
            assert len(fake.alerts) == 2  # ApiDown and SlowResponses, nothing else

            jobs = await svc.runtime.store.pages.for_incident(api_down)
            assert [(j.action, j.status, j.attempts) for j in jobs] == [("trigger", "sent", 3)]


async def test_same_webhook_three_times_is_one_opsgenie_alert(kafka: str, tmp_path: Path) -> None:
    settings = test_settings(kafka, tmp_path, pagers=["opsgenie"])
    async with FakeOpsgenie() as fake:
        notifiers: dict[str, Notifier] = {"opsgenie": OpsgenieNotifier(KEY, fake.url, TIMEOUT)}
        async with run_service(settings, notifiers=notifiers) as svc:
            doc = body(webhook(alert("ApiDown", namespace="aragora")))
            for _ in range(3):
                assert (await svc.post_webhook(doc)).status_code == 202
            await svc.runtime.progress.wait_records(3)  # all three are stored, page jobs included
            await svc.events.wait_types({"page.sent": 1})
            await svc.runtime.pages.drain()
            assert await svc.runtime.pages.run_once() == 0  # no other page job is due

            [sent] = svc.events.of_type("page.sent")
            alias = sent["data"]["page"]["idempotency_key"]
            assert len(fake.requests_to("create")) == 1
            assert len(fake.accepted("create", alias)) == 1
            [only] = fake.alerts
            assert (only.alias, only.priority, only.count) == (alias, "P1", 1)

            # Resolving the incident closes that same alert, by alias.
            resolved = alert(
                "ApiDown", status="resolved", ends_at="2026-11-26T10:05:00Z", namespace="aragora"
            )
            assert (await svc.post_webhook(body(webhook(resolved)))).status_code == 202
            await svc.events.wait_types({"page.sent": 2})
            [closing] = fake.requests_to("close")
            assert closing.path == f"/v2/alerts/{alias}/close"
            assert closing.query == {"identifierType": ["alias"]}
            assert [a.status for a in fake.alerts] == ["closed"]


async def test_page_rejected_with_400_is_not_retried(kafka: str, tmp_path: Path) -> None:
    settings = test_settings(kafka, tmp_path, pagers=["opsgenie"])
    async with FakeOpsgenie() as fake:
        fake.script("create", Reply(400), Reply(400), Reply(400))
        notifiers: dict[str, Notifier] = {"opsgenie": OpsgenieNotifier(KEY, fake.url, TIMEOUT)}
        async with run_service(settings, notifiers=notifiers) as svc:
            assert (
                await svc.post_webhook(body(webhook(alert("DataLoss", namespace="db"))))
            ).status_code == 202
            await svc.events.wait_types({"page.failed": 1})
            await svc.runtime.pages.drain()
            assert await svc.runtime.pages.run_once() == 0  # nothing left to retry

            [failed] = svc.events.of_type("page.failed")
            page = failed["data"]["page"]
            assert (page["attempt"], page["retrying"]) == (1, False)
            assert "HTTP 400" in page["error"]
            assert svc.events.of_type("page.sent") == []

            jobs = await svc.runtime.store.pages.for_incident(failed["data"]["id"])
            assert [(j.action, j.status, j.attempts) for j in jobs] == [("trigger", "failed", 1)]
            assert "HTTP 400" in (jobs[0].last_error or "")
            assert len(fake.requests) == 1
            assert fake.alerts == []
