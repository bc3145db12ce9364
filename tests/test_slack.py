"""The Slack pager (#incidents), through httpx, against a real HTTP server.

``tests.support.slack_api.FakeSlackWebhook`` stands in for a Slack incoming webhook;
httpx and the sockets between them are the real ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from service.config import ConfigError, Settings
from service.models import PageAction
from service.notify.base import Notifier, PageError, PageRequest, idempotency_key
from service.notify.slack import ACK_ACTION, RESOLVE_ACTION, SlackNotifier
from service.ruleset import RuleSet
from tests.support.payloads import alert, body, webhook
from tests.support.service import run_service, test_settings
from tests.support.slack_api import FakeSlackWebhook, Reply

TIMEOUT = 10.0


def page_request(
    rules: RuleSet,
    action: str = "trigger",
    *,
    severity: str = "SEV-1",
    title: str = "API is down",
) -> PageRequest:
    """A PageRequest as the page worker builds it: the real templates and severity table."""
    incident_id = f"inc-{uuid.uuid4().hex[:12]}"
    incident: dict[str, Any] = {
        "id": incident_id,
        "title": title,
        "impact": "Complete service outage: users cannot use the product",
        "severity": severity,
        "status": "open" if action == "trigger" else "resolved",
        "group_key": '{alertname="ApiDown",namespace="aragora"}',
        "group_labels": {"alertname": "ApiDown", "namespace": "aragora"},
        "fingerprints": ["a1b2c3d4e5f60718"],
        "firing_fingerprints": ["a1b2c3d4e5f60718"] if action == "trigger" else [],
        "opening": 1,
        "opened_at": "2026-11-26T10:00:00Z",
        "acknowledged_at": None,
        "roles": {},
        "resolved_at": None if action == "trigger" else "2026-11-26T10:05:00Z",
        "response_due_at": "2026-11-26T10:15:00Z",
    }
    template = rules.templates.incident if action == "trigger" else rules.templates.close_note
    text = template.render(incident={**incident, "alert_count": 1}).strip()
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
async def slack() -> AsyncIterator[FakeSlackWebhook]:
    async with FakeSlackWebhook() as fake:
        yield fake


@pytest.fixture
async def notifier(slack: FakeSlackWebhook) -> AsyncIterator[SlackNotifier]:
    n = SlackNotifier(slack.webhook_url, TIMEOUT)
    yield n
    await n.aclose()


async def failure(notifier: SlackNotifier, request: PageRequest) -> PageError:
    with pytest.raises(PageError) as caught:
        await notifier.send(request)
    return caught.value


def assert_hidden(url: str, *texts: str) -> None:
    """Neither the webhook URL nor its secret path shows up in any of ``texts``."""
    secret_path = url.split("/services/", 1)[1]
    for text in texts:
        assert url not in text
        assert secret_path not in text
        assert secret_path.rsplit("/", 1)[-1] not in text


# -- the message ---------------------------------------------------------------------


async def test_trigger_posts_one_message_with_the_runbook_text_and_blocks(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    request = page_request(rules, severity="SEV-1")

    reference = await notifier.send(request)

    assert reference is None  # an incoming webhook gives no reference
    [sent] = slack.requests
    assert (sent.method, sent.path) == ("POST", slack.hook_path)
    assert sent.header("Content-Type") == "application/json"
    assert [(a.status, a.body) for a in slack.answers] == [(200, "ok")]
    [message] = slack.messages
    assert message["text"] == f"{request.message}\n{request.description}"
    assert message["text"].startswith("[INCIDENT] SEV-1: API is down\n")
    assert "- Status: Investigating" in message["text"]
    assert "- Impact: Complete service outage" in message["text"]

    header, section, actions, context = message["blocks"]
    assert actions["type"] == "actions"  # the Acknowledge and Resolve buttons
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "[INCIDENT] SEV-1: API is down"},
    }
    assert section["type"] == "section"
    assert section["text"] == {"type": "mrkdwn", "text": request.description}
    assert context["type"] == "context"
    [element] = context["elements"]
    assert element["type"] == "mrkdwn"
    assert request.incident_id in element["text"]
    assert request.idempotency_key in element["text"]


async def test_close_posts_the_resolved_note(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    close = page_request(rules, "close")

    await notifier.send(close)

    [message] = slack.messages
    assert message["text"].startswith("[UPDATE] SEV-1: API is down\n")
    assert "- Status: Resolved" in message["text"]
    assert "- Resolved at: 2026-11-26T10:05:00Z" in message["text"]
    header, section, _ = message["blocks"]
    assert header["text"]["text"] == "[UPDATE] SEV-1: API is down"
    assert "- Status: Resolved" in section["text"]["text"]
    assert len(slack.requests) == 1


async def test_an_update_posts_its_update_line(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    trigger = page_request(rules)
    update = PageRequest(
        action="update",
        incident=trigger.incident,
        opening=1,
        idempotency_key=trigger.idempotency_key,
        message="[UPDATE] SEV-1: API is down",
        description="- Status: Identified\n- Root cause: bad deploy",
        priority="P1",
    )

    await notifier.send(update)

    [message] = slack.messages
    assert message["text"] == "[UPDATE] SEV-1: API is down\n- Status: Identified\n- Root cause: bad deploy"
    assert message["blocks"][0]["text"]["text"] == "[UPDATE] SEV-1: API is down"


async def test_mrkdwn_control_characters_are_escaped(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    # A label or title from an alert must not ping the channel or turn into a link.
    request = page_request(rules, title="<!channel> R&D <http://evil|click>")

    await notifier.send(request)

    [message] = slack.messages
    escaped = "&lt;!channel&gt; R&amp;D &lt;http://evil|click&gt;"
    assert message["text"].startswith(f"[INCIDENT] SEV-1: {escaped}\n")
    assert "<" not in message["text"] and ">" not in message["text"]
    # The header is plain_text, which Slack never parses: shown as written.
    assert message["blocks"][0]["text"]["text"] == "[INCIDENT] SEV-1: <!channel> R&D <http://evil|click>"


async def test_long_texts_are_cut_to_slacks_block_limits(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    request = page_request(rules, title="x" * 400)
    long = PageRequest(
        "trigger", request.incident, 1, request.idempotency_key, request.message, "d" * 5000, "P1"
    )

    await notifier.send(long)  # the fake answers invalid_blocks to anything over the limits

    [message] = slack.messages
    header, section, _, _ = message["blocks"]
    assert len(header["text"]["text"]) == 150 and header["text"]["text"].endswith("…")
    assert len(section["text"]["text"]) == 3000
    assert message["text"] == f"{long.message}\n{long.description}"  # the full text, within 40k


async def test_an_empty_description_leaves_the_section_out(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    request = page_request(rules)
    bare = PageRequest("trigger", request.incident, 1, request.idempotency_key, request.message, "", "P1")

    await notifier.send(bare)

    [message] = slack.messages
    assert message["text"] == "[INCIDENT] SEV-1: API is down"
    assert [b["type"] for b in message["blocks"]] == ["header", "actions", "context"]


async def test_the_incident_message_has_acknowledge_and_resolve_buttons_for_its_opening(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    request = page_request(rules)

    await notifier.send(request)  # the fake checks Block Kit's rules for actions blocks too

    [message] = slack.messages
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    ack, resolve = actions["elements"]
    assert (ack["type"], ack["action_id"], ack["text"]["text"]) == ("button", ACK_ACTION, "Acknowledge")
    assert (resolve["action_id"], resolve["text"]["text"]) == (RESOLVE_ACTION, "Resolve")
    assert "confirm" in resolve and "confirm" not in ack  # resolving asks first
    value = {"incident": request.incident_id, "opening": 1}
    assert json.loads(ack["value"]) == json.loads(resolve["value"]) == value


async def test_updates_and_the_close_note_have_no_buttons(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    await notifier.send(page_request(rules, "close"))
    trigger = page_request(rules)
    await notifier.send(
        PageRequest(PageAction.UPDATE, trigger.incident, 1, trigger.idempotency_key, "[UPDATE] x", "", "P1")
    )

    assert [[b["type"] for b in m["blocks"] if b["type"] == "actions"] for m in slack.messages] == [[], []]


async def test_the_roles_mentions_lead_the_message_unescaped(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    # contacts.yaml: `Incident Commander: {slack: {mention: "<!subteam^S0IC>"}}`; the page
    # worker hands each role's contact over as a responder.
    request = dataclasses.replace(
        page_request(rules),
        roles=("Incident Commander", "Technical Lead", "DevOps"),
        responders=({"mention": "<!subteam^S0IC>"}, {"mention": "<@U0LEAD>"}, {"mention": "<!subteam^S0IC>"}),
    )

    await notifier.send(request)

    [message] = slack.messages
    assert message["text"] == f"<!subteam^S0IC> <@U0LEAD>\n{request.message}\n{request.description}"
    _, mentions, *_ = message["blocks"]
    assert mentions == {"type": "section", "text": {"type": "mrkdwn", "text": "<!subteam^S0IC> <@U0LEAD>"}}


# -- answers and failures --------------------------------------------------------------


async def test_throttled_answer_is_retryable_and_carries_retry_after(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    slack.script(Reply(429, body="rate_limited", headers={"Retry-After": "30"}))

    err = await failure(notifier, page_request(rules))

    assert err.retryable is True
    assert err.retry_after == 30.0
    assert err.reason == "slack answered HTTP 429: rate_limited"
    assert len(slack.requests) == 1  # no retry inside the notifier
    assert slack.messages == []


@pytest.mark.parametrize(("header", "expected"), [("0", 0.0), ("120", 120.0), ("soon", None), ("inf", None)])
async def test_retry_after_values(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet, header: str, expected: float | None
) -> None:
    slack.script(Reply(429, headers={"Retry-After": header}))

    err = await failure(notifier, page_request(rules))

    assert err.retryable is True
    assert err.retry_after == expected


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet, status: int
) -> None:
    slack.script(Reply(status))

    err = await failure(notifier, page_request(rules))

    assert err.retryable is True
    assert f"HTTP {status}" in err.reason
    assert err.retry_after is None
    assert len(slack.requests) == 1
    assert slack.messages == []


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
    ],
)
async def test_rejected_posts_are_not_retryable_and_say_why(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet, status: int, reason: str
) -> None:
    slack.script(Reply(status, body=reason))

    err = await failure(notifier, page_request(rules))

    assert err.retryable is False
    assert err.reason == f"slack answered HTTP {status}: {reason}"
    assert err.retry_after is None
    assert len(slack.requests) == 1
    assert slack.messages == []


async def test_a_revoked_webhook_is_no_service_not_retryable_and_hides_the_url(
    slack: FakeSlackWebhook, rules: RuleSet
) -> None:
    revoked = f"{slack.base_url}/services/T0INCIDENT/B0INCIDENT/revokedSecretToken123"
    n = SlackNotifier(revoked, TIMEOUT)
    try:
        err = await failure(n, page_request(rules))
    finally:
        await n.aclose()

    [answer] = slack.answers  # the fake's own answer to an unknown hook, as Slack gives it
    assert (answer.status, answer.body) == (404, "no_service")
    assert err.retryable is False
    assert err.reason == "slack answered HTTP 404: no_service"
    assert_hidden(revoked, err.reason, str(err), repr(n))


async def test_an_echoed_url_in_an_error_body_is_redacted(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    # Some proxies quote the URL they refused; the reason must not carry it on.
    slack.script(Reply(403, body=f"forbidden: POST {slack.webhook_url} (path {slack.hook_path})"))

    err = await failure(notifier, page_request(rules))

    assert err.retryable is False
    assert err.reason.startswith("slack answered HTTP 403: forbidden: POST <slack webhook URL>")
    assert_hidden(slack.webhook_url, err.reason)


async def test_hung_webhook_times_out_as_retryable(slack: FakeSlackWebhook, rules: RuleSet) -> None:
    release = threading.Event()
    slack.script(Reply(hold=release))
    impatient = SlackNotifier(slack.webhook_url, 0.5)
    try:
        err = await asyncio.wait_for(failure(impatient, page_request(rules)), 10)
        assert not release.is_set()  # the answer was still held when the notifier gave up
        assert slack.answers == []
    finally:
        release.set()
        await impatient.aclose()

    assert err.retryable is True
    assert err.reason.startswith("slack unreachable: timed out after 0.5s")
    assert_hidden(slack.webhook_url, err.reason)
    assert len(slack.requests) == 1
    # Released, Slack posts the message all the same: the worker's retry may show it twice,
    # the price of at-least-once delivery through a webhook that does not deduplicate.
    await slack.wait_for(lambda: len(slack.answers) == 1)
    assert len(slack.messages) == 1


async def test_connection_refused_is_retryable(rules: RuleSet) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but never listening: every connect is refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/services/T0/B0/refusedSecretToken456"
        unreachable = SlackNotifier(url, TIMEOUT)
        try:
            err = await failure(unreachable, page_request(rules))
        finally:
            await unreachable.aclose()
    assert err.retryable is True
    assert err.reason.startswith("slack unreachable: ConnectError")
    assert err.retry_after is None
    assert_hidden(url, err.reason)


async def test_connection_dropped_without_answer_is_retryable_and_not_resent(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    slack.script(Reply(drop=True))

    err = await failure(notifier, page_request(rules))

    assert err.retryable is True
    assert err.reason.startswith("slack unreachable:")
    assert len(slack.requests) == 1
    assert slack.messages == []


async def test_each_send_is_exactly_one_request(
    slack: FakeSlackWebhook, notifier: SlackNotifier, rules: RuleSet
) -> None:
    slack.script(Reply(503), Reply(429, headers={"Retry-After": "1"}))
    request = page_request(rules)

    for expected in (1, 2):
        await failure(notifier, request)
        assert len(slack.requests) == expected
    await notifier.send(request)

    assert len(slack.requests) == 3
    assert [a.status for a in slack.answers] == [503, 429, 200]
    assert len(slack.messages) == 1


async def test_the_webhook_url_never_reaches_the_logs(
    slack: FakeSlackWebhook, rules: RuleSet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx logs each request's URL at INFO, httpcore more at DEBUG
    n = SlackNotifier(slack.webhook_url, TIMEOUT)
    slack.script(Reply(500), Reply(404, body="no_service"))
    try:
        for _ in range(2):
            await failure(n, page_request(rules))
        await n.send(page_request(rules))
    finally:
        await n.aclose()

    assert len(slack.messages) == 1
    logged = [r.getMessage() for r in caplog.records]
    assert any(r.name == "httpx" for r in caplog.records)  # the lines were written, redacted
    assert_hidden(slack.webhook_url, *logged, caplog.text)


# -- configuration ---------------------------------------------------------------------


def _settings(url: str | None) -> Settings:
    return Settings(slack_webhook_url=SecretStr(url) if url is not None else None, slack_timeout_seconds=3)


async def test_from_settings_builds_a_notifier(slack: FakeSlackWebhook, rules: RuleSet) -> None:
    n = SlackNotifier.from_settings(_settings(f"  {slack.webhook_url}\n"))
    try:
        assert n.name == "slack"
        assert n.comms is True
        await n.send(page_request(rules))
    finally:
        await n.aclose()
    assert len(slack.messages) == 1
    assert_hidden(slack.webhook_url, repr(n))


def test_from_settings_reads_the_url_file(tmp_path: Path) -> None:
    secret = tmp_path / "slack-webhook"
    secret.write_text("https://hooks.slack.com/services/T0/B0/fileSecretToken789\n")
    n = SlackNotifier.from_settings(Settings(slack_webhook_url_file=secret))
    assert_hidden("https://hooks.slack.com/services/T0/B0/fileSecretToken789", repr(n))


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        (None, "INCIDENTD_SLACK_WEBHOOK_URL"),
        ("   ", "empty"),
        ("ftp://hooks.slack.com/services/T0/B0/ftpSecretToken", "http(s)"),
        ("hooks.slack.com/services/T0/B0/bareSecretToken", "http(s)"),
        ("https:///services/T0/B0/hostlessSecretToken", "no host"),
        ("https://hooks.slack.com:port/services/T0/B0/portSecretToken", "not a valid URL"),
    ],
)
def test_from_settings_refuses_a_missing_or_bad_url(url: str | None, complaint: str) -> None:
    with pytest.raises(ValueError) as caught:
        SlackNotifier.from_settings(_settings(url))
    message = str(caught.value)
    assert complaint in message
    assert "slack" in message.lower()
    assert "SecretToken" not in message  # never quote the credential back


def test_an_empty_url_is_refused_by_the_settings_already() -> None:
    # A secret that is set but empty stops the service before any pager is built.
    with pytest.raises(ConfigError, match="INCIDENTD_SLACK_WEBHOOK_URL is set but empty"):
        _settings("")


# -- through the whole service on the real broker ---------------------------------------


async def test_service_posts_one_slack_message_per_incident_and_the_resolved_note(
    kafka: str, tmp_path: Path
) -> None:
    settings = test_settings(kafka, tmp_path, pagers=["slack"])
    async with FakeSlackWebhook() as slack:
        notifiers: dict[str, Notifier] = {"slack": SlackNotifier(slack.webhook_url, TIMEOUT)}
        async with run_service(settings, notifiers=notifiers) as svc:
            doc = body(webhook(alert("ApiDown", namespace="aragora")))
            for _ in range(3):
                assert (await svc.post_webhook(doc)).status_code == 202
            await svc.runtime.progress.wait_records(3)  # all three are stored, page jobs included
            await svc.events.wait_types({"incident.opened": 1, "page.sent": 1})
            await svc.runtime.pages.drain()
            assert await svc.runtime.pages.run_once() == 0  # no other page job is due

            [opened] = svc.events.of_type("incident.opened")
            assert opened["data"]["severity"] == "SEV-1"
            [sent] = svc.events.of_type("page.sent")
            assert sent["data"]["id"] == opened["data"]["id"]
            assert sent["data"]["page"]["integration"] == "slack"
            assert sent["data"]["page"]["action"] == "trigger"
            assert svc.events.of_type("page.failed") == []

            # The same webhook three times: one incident, one message in the channel.
            assert len(slack.requests) == 1
            [message] = slack.messages
            assert message["text"].startswith("[INCIDENT] SEV-1:")
            assert "- Status: Investigating" in message["text"]
            assert "alertname=ApiDown" in message["text"]
            assert opened["data"]["id"] in message["blocks"][-1]["elements"][0]["text"]
            assert sent["data"]["page"]["idempotency_key"] in message["blocks"][-1]["elements"][0]["text"]

            resolved = alert(
                "ApiDown", status="resolved", ends_at="2026-11-26T10:05:00Z", namespace="aragora"
            )
            assert (await svc.post_webhook(body(webhook(resolved)))).status_code == 202
            await svc.events.wait_types({"page.sent": 2})

            closing = svc.events.of_type("page.sent")[-1]["data"]["page"]
            assert (closing["integration"], closing["action"]) == ("slack", "close")
            assert len(slack.requests) == 2
            [_, note] = slack.messages
            assert note["text"].startswith("[UPDATE] SEV-1:")
            assert "- Status: Resolved" in note["text"]
