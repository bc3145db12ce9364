"""End to end with the real Alertmanager 0.25: amtool -> Alertmanager -> webhook -> service
-> Kafka -> incidents -> pages -> CloudEvents on the events topic.

Nothing here is simulated: alerts are fired and resolved with amtool, Alertmanager groups
them and posts its own webhooks (with its own fingerprints, re-sends and, in the HA tests,
two unclustered replicas posting the same group, or a real two-member gossip cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families

from service.correlate.fingerprint import fingerprint
from service.emit.schema import EVENT_TYPES
from tests.support.alertmanager import (
    Alertmanager,
    cluster_status,
    pipeline_counts,
    run_alertmanager,
    run_alertmanager_cluster,
    wait_decided,
)
from tests.support.service import RunningService, run_service, test_settings

pytestmark = pytest.mark.alertmanager

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "incident-event-data" / "v1.json"
# Alertmanager's route groups exactly as the service does (rules/grouping.yaml).
GROUP_BY = ["alertname", "cluster", "namespace"]
WAIT = 20.0

API_DOWN = {"alertname": "ApiDown", "namespace": "aragora"}
SLOW_A = {"alertname": "SlowResponses", "namespace": "aragora", "pod": "api-0"}
SLOW_B = {"alertname": "SlowResponses", "namespace": "aragora", "pod": "api-1"}

# Three groups of two alerts each (pod and instance are not in group_by), one cluster label.
CLUSTER_GROUPS: dict[str, list[dict[str, str]]] = {
    "ApiDown": [{**API_DOWN, "cluster": "prod-eu", "pod": pod} for pod in ("api-0", "api-1")],
    "ConnectorDown": [
        {"alertname": "ConnectorDown", "namespace": "aragora", "cluster": "prod-eu", "instance": i}
        for i in ("conn-0", "conn-1")
    ],
    "UIGlitch": [
        {"alertname": "UIGlitch", "namespace": "web", "cluster": "prod-eu", "pod": pod}
        for pod in ("ui-0", "ui-1")
    ],
}
CLUSTER_SEVERITIES = {"ApiDown": "SEV-1", "ConnectorDown": "SEV-3", "UIGlitch": "SEV-4"}

StartAlertmanager = Callable[[str], Awaitable[Alertmanager]]


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
async def service(kafka: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    async with run_service(test_settings(kafka, tmp_path)) as svc:
        assert list(svc.runtime.rules.grouping.group_by) == GROUP_BY, "rules and the AM route disagree"
        yield svc


@pytest.fixture
async def start_alertmanager(service: RunningService, tmp_path: Path) -> AsyncIterator[StartAlertmanager]:
    """Starts real Alertmanagers posting to ``service``; every one is terminated at teardown."""
    webhook = f"{service.url}/api/v1/alerts/alertmanager"
    async with contextlib.AsyncExitStack() as stack:

        async def start(name: str = "am") -> Alertmanager:
            return await stack.enter_async_context(
                run_alertmanager(tmp_path / "alertmanager", webhook, GROUP_BY, name=name)
            )

        yield start


@pytest.fixture
async def alertmanager_cluster(service: RunningService, tmp_path: Path) -> AsyncIterator[list[Alertmanager]]:
    """Two real Alertmanagers gossiping on loopback, both posting to ``service``; yielded once
    both say the cluster is ready with both peers, terminated at teardown."""
    webhook = f"{service.url}/api/v1/alerts/alertmanager"
    async with run_alertmanager_cluster(tmp_path / "alertmanager-cluster", webhook, GROUP_BY) as members:
        yield members


@pytest.fixture(scope="session")
def event_data_validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


# -- helpers ----------------------------------------------------------------------------


def _started(seconds_ago: float = 2.0) -> datetime:
    """A start time as Prometheus would give it (the same one to every Alertmanager)."""
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).replace(microsecond=0)


async def _metric(svc: RunningService, sample: str, **labels: str) -> float:
    resp = await svc.client.get(f"{svc.url}/metrics")
    resp.raise_for_status()
    total = 0.0
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def _wait_metric(
    svc: RunningService, sample: str, at_least: float, timeout: float = WAIT, **labels: str
) -> float:
    """Polls /metrics: a counter in another component has no event to wait on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await _metric(svc, sample, **labels)
        if value >= at_least:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{sample}{labels or ''} = {value}, expected >= {at_least}")
        await asyncio.sleep(0.05)


async def _caught_up(svc: RunningService) -> None:
    """Every event the service has published so far has reached our reader."""
    published = await _metric(svc, "incidentd_events_published_total")
    await svc.events.wait_for(lambda records: len(records) >= published, WAIT)


async def _am_fingerprints(am: Alertmanager) -> dict[str, str]:
    """Alertmanager's own fingerprints of its active alerts, by their labels (GET /api/v2/alerts)."""
    return {_label_key(a["labels"]): a["fingerprint"] for a in await am.api_alerts()}


async def _all_processed(svc: RunningService) -> float:
    """Every alert the webhook accepted so far went through the pipeline and every event it
    published reached our reader; returns how many alerts the webhook accepted."""
    accepted = await _metric(svc, "incidentd_webhook_alerts_accepted_total", source="http")
    await _wait_metric(svc, "incidentd_alerts_received_total", accepted)
    await _caught_up(svc)
    return accepted


async def _webhooks_sent(members: list[Alertmanager]) -> dict[str, float]:
    """Webhook notifications each cluster member sent (for failure messages)."""
    async with httpx.AsyncClient(timeout=5) as client:
        return {am.name: (await pipeline_counts(am, client)).webhooks for am in members}


def _incident_events(svc: RunningService) -> list[dict[str, Any]]:
    return [e for e in svc.events.events if _suffix(svc, e["type"]).startswith("incident.")]


def _label_key(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(labels.items())))


def _of_type(svc: RunningService, suffix: str) -> list[dict[str, Any]]:
    return svc.events.of_type(suffix)


def _suffix(svc: RunningService, type_: str) -> str:
    return type_.removeprefix(svc.settings.event_type_prefix.rstrip(".") + ".")


def _by_alertname(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        name = e["data"]["group_labels"]["alertname"]
        assert name not in out, f"two events for group {name}: {out[name]} and {e}"
        out[name] = e
    return out


def _check_every_event(svc: RunningService, validator: Draft202012Validator) -> None:
    """CloudEvents 1.0 structured mode, keyed by incident id, ``data`` valid against the schema."""
    prefix = svc.settings.event_type_prefix.rstrip(".") + "."
    ids: set[str] = set()
    assert svc.events.records, "no events at all"
    for rec in svc.events.records:
        event = json.loads(rec.value)
        data = event["data"]
        assert event["specversion"] == "1.0"
        assert event["type"].startswith(prefix), event["type"]
        assert event["type"][len(prefix) :] in EVENT_TYPES, event["type"]
        assert event["source"] == svc.settings.event_source
        assert event["datacontenttype"] == "application/json"
        assert datetime.fromisoformat(event["time"]).tzinfo is not None
        assert event["id"] and event["id"] not in ids, "CloudEvent ids must be unique"
        ids.add(event["id"])
        assert event["subject"] == data["id"]
        assert rec.key is not None and rec.key.decode() == data["id"], "Kafka key must be the incident id"
        headers = {k.lower(): v for k, v in rec.headers or ()}
        assert headers.get("content-type", b"").startswith(b"application/cloudevents+json")
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        assert not errors, f"{event['type']} data violates the schema: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path)) or '(data)'}: {e.message}" for e in errors
        )


# -- tests ------------------------------------------------------------------------------


async def test_alertmanager_groups_open_one_incident_and_one_page_each(
    service: RunningService,
    start_alertmanager: StartAlertmanager,
    event_data_validator: Draft202012Validator,
) -> None:
    am = await start_alertmanager("am")
    starts_at = _started()
    await asyncio.gather(am.fire(API_DOWN, starts_at=starts_at), am.fire(SLOW_A, starts_at=starts_at))
    fps = await _am_fingerprints(am)
    assert len(fps) == 2

    await service.events.wait_types({"incident.opened": 2, "page.sent": 2}, WAIT)

    # A second pod of the same group after the group's first notification: at its next
    # group_interval Alertmanager re-sends the whole group, api-0 included (a duplicate).
    await am.fire(SLOW_B, starts_at=starts_at)
    fps = await _am_fingerprints(am)
    assert len(fps) == 3
    slow_fps = sorted([fps[_label_key(SLOW_A)], fps[_label_key(SLOW_B)]])
    await service.events.wait_for(
        lambda _: any(e["data"]["fingerprints"] == slow_fps for e in _of_type(service, "incident.updated")),
        WAIT,
    )
    assert await _wait_metric(service, "incidentd_alerts_deduplicated_total", 1) >= 1
    await _caught_up(service)

    opened = _by_alertname(_of_type(service, "incident.opened"))
    assert set(opened) == {"ApiDown", "SlowResponses"}, [e["type"] for e in service.events.events]
    assert _of_type(service, "incident.reopened") == []
    api, slow = opened["ApiDown"]["data"], opened["SlowResponses"]["data"]
    assert (api["severity"], slow["severity"]) == ("SEV-1", "SEV-3")
    assert api["group_labels"] == {"alertname": "ApiDown", "namespace": "aragora"}
    assert slow["group_labels"] == {"alertname": "SlowResponses", "namespace": "aragora"}
    assert api["title"] == "ApiDown in aragora"
    assert api["status"] == slow["status"] == "open"

    # Alertmanager's fingerprints, carried through as they are (and equal to ours).
    for labels in (API_DOWN, SLOW_A, SLOW_B):
        assert fps[_label_key(labels)] == fingerprint(labels)
    assert api["fingerprints"] == api["firing_fingerprints"] == [fps[_label_key(API_DOWN)]]
    assert slow["fingerprints"] == [fps[_label_key(SLOW_A)]]
    [part] = opened["ApiDown"]["data"]["alerts"]
    assert part["fingerprint"] == fps[_label_key(API_DOWN)]
    assert part["labels"] == API_DOWN
    assert part["rule"] == "complete-outage"
    assert datetime.fromisoformat(part["starts_at"]) == starts_at

    # Both pods are one incident: pod is not in group_by.
    [updated] = _of_type(service, "incident.updated")
    assert updated["subject"] == slow["id"]
    assert updated["data"]["fingerprints"] == updated["data"]["firing_fingerprints"] == slow_fps
    assert updated["data"]["reasons"] == ["alert_added"]
    assert [a["labels"] for a in updated["data"]["alerts"]] == [SLOW_B]
    assert updated["data"]["severity"] == "SEV-3"

    # One trigger page per incident, even after Alertmanager re-sent the group.
    pages = _of_type(service, "page.sent")
    assert Counter((p["subject"], p["data"]["page"]["action"]) for p in pages) == {
        (api["id"], "trigger"): 1,
        (slow["id"], "trigger"): 1,
    }
    assert {p["data"]["page"]["integration"] for p in pages} == {"console"}
    assert await _metric(service, "incidentd_pages_sent_total", action="trigger") == 2
    assert await _metric(service, "incidentd_incidents_opened_total") == 2
    assert Counter(_suffix(service, e["type"]) for e in service.events.events) == {
        "incident.opened": 2,
        "page.sent": 2,
        "incident.updated": 1,
    }
    _check_every_event(service, event_data_validator)


async def test_alertmanager_resolve_closes_each_incident_and_its_page(
    service: RunningService,
    start_alertmanager: StartAlertmanager,
    event_data_validator: Draft202012Validator,
) -> None:
    am = await start_alertmanager("am")
    firing = (API_DOWN, SLOW_A, SLOW_B)
    # As an operator would: no --start (Alertmanager stamps it), later the same labels with
    # --end=now (Alertmanager merges it into the firing alert, keeping its startsAt).
    await asyncio.gather(*(am.fire(labels) for labels in firing))
    fps = await _am_fingerprints(am)
    slow_fps = sorted([fps[_label_key(SLOW_A)], fps[_label_key(SLOW_B)]])

    def slow_has_both(_: Any) -> bool:
        # Both pods usually come in the group's first notification, else in the next one.
        return any(
            e["data"]["group_labels"]["alertname"] == "SlowResponses"
            and e["data"]["firing_fingerprints"] == slow_fps
            for e in service.events.events
        )

    await service.events.wait_types({"incident.opened": 2, "page.sent": 2}, WAIT)
    await service.events.wait_for(slow_has_both, WAIT)
    opened = _by_alertname(_of_type(service, "incident.opened"))
    ids = {name: e["subject"] for name, e in opened.items()}

    ends_at = datetime.now(UTC)
    await asyncio.gather(*(am.resolve(labels, ends_at=ends_at) for labels in firing))
    await service.events.wait_types({"incident.resolved": 2, "page.sent": 4}, WAIT)
    await _caught_up(service)

    resolved = _by_alertname(_of_type(service, "incident.resolved"))
    assert {name: e["subject"] for name, e in resolved.items()} == ids
    for name, event in resolved.items():
        data = event["data"]
        assert data["status"] == "resolved"
        assert data["firing_fingerprints"] == []
        assert data["resolved_at"] is not None
        assert data["severity"] == {"ApiDown": "SEV-1", "SlowResponses": "SEV-3"}[name]
    assert resolved["SlowResponses"]["data"]["fingerprints"] == slow_fps
    assert resolved["ApiDown"]["data"]["fingerprints"] == [fps[_label_key(API_DOWN)]]
    assert _of_type(service, "incident.reopened") == []
    assert len(_of_type(service, "incident.opened")) == 2

    pages = _of_type(service, "page.sent")
    assert Counter((p["subject"], p["data"]["page"]["action"]) for p in pages) == {
        (ids["ApiDown"], "trigger"): 1,
        (ids["SlowResponses"], "trigger"): 1,
        (ids["ApiDown"], "close"): 1,
        (ids["SlowResponses"], "close"): 1,
    }
    for incident_id in ids.values():
        keys = {p["data"]["page"]["idempotency_key"] for p in pages if p["subject"] == incident_id}
        assert len(keys) == 1, "the close must carry the trigger's idempotency key (alias/dedup_key)"
    closes = [p for p in pages if p["data"]["page"]["action"] == "close"]
    assert all(p["data"]["status"] == "resolved" for p in closes)
    _check_every_event(service, event_data_validator)


async def test_two_unclustered_alertmanagers_give_one_incident_and_one_page(
    service: RunningService,
    start_alertmanager: StartAlertmanager,
    event_data_validator: Draft202012Validator,
) -> None:
    replicas = await asyncio.gather(start_alertmanager("am-a"), start_alertmanager("am-b"))
    assert replicas[0].url != replicas[1].url
    alert = {**API_DOWN, "cluster": "prod-eu"}
    starts_at = _started()
    # Prometheus sends every alert to every Alertmanager, with the same startsAt.
    await asyncio.gather(*(am.fire(alert, starts_at=starts_at) for am in replicas))
    [fp_a], [fp_b] = [list((await _am_fingerprints(am)).values()) for am in replicas]
    assert fp_a == fp_b == fingerprint(alert)

    await service.events.wait_types({"incident.opened": 1, "page.sent": 1}, WAIT)
    # Both replicas' webhooks accepted and processed: the second one was a duplicate.
    await _wait_metric(service, "incidentd_webhook_alerts_accepted_total", 2, source="http")
    await _wait_metric(service, "incidentd_alerts_received_total", 2)
    assert await _wait_metric(service, "incidentd_alerts_deduplicated_total", 1) == 1
    await _caught_up(service)

    [opened] = _of_type(service, "incident.opened")
    assert opened["data"]["severity"] == "SEV-1"
    assert opened["data"]["group_labels"] == {
        "alertname": "ApiDown",
        "cluster": "prod-eu",
        "namespace": "aragora",
    }
    assert opened["data"]["fingerprints"] == [fp_a]
    [page] = _of_type(service, "page.sent")
    assert page["subject"] == opened["subject"]
    assert page["data"]["page"]["action"] == "trigger"
    assert Counter(_suffix(service, e["type"]) for e in service.events.events) == {
        "incident.opened": 1,
        "page.sent": 1,
    }

    # Both replicas resolve it too: one resolved event, one close page.
    ends_at = datetime.now(UTC)
    await asyncio.gather(*(am.resolve(alert, starts_at=starts_at, ends_at=ends_at) for am in replicas))
    await service.events.wait_types({"incident.resolved": 1, "page.sent": 2}, WAIT)
    await _wait_metric(service, "incidentd_alerts_received_total", 4)
    assert await _wait_metric(service, "incidentd_alerts_deduplicated_total", 2) == 2
    await _caught_up(service)
    [resolved] = _of_type(service, "incident.resolved")
    assert resolved["subject"] == opened["subject"]
    pages = _of_type(service, "page.sent")
    assert [p["data"]["page"]["action"] for p in pages] == ["trigger", "close"]
    assert Counter(_suffix(service, e["type"]) for e in service.events.events) == {
        "incident.opened": 1,
        "page.sent": 2,
        "incident.resolved": 1,
    }
    _check_every_event(service, event_data_validator)


@pytest.mark.timeout(60)
async def test_two_clustered_alertmanagers_give_one_incident_and_one_page_per_group(
    service: RunningService,
    alertmanager_cluster: list[Alertmanager],
    event_data_validator: Draft202012Validator,
) -> None:
    """A real two-member cluster: the notification log is gossiped and the member at position 1
    waits peer_timeout before it sends what its peer has not, so a firing group is usually
    notified by one member only. On resolve, that member's flush in flight (taken before the
    resolve, decided after its peer sent it) re-sends the old firing state and then the resolve
    (prometheus/alertmanager#2447; nearly every run here). Either way: one incident, one
    trigger page, one incident.resolved and one close page per group.
    """
    members = alertmanager_cluster
    async with httpx.AsyncClient(timeout=5) as client:
        statuses = [await cluster_status(am, client) for am in members]
    assert [s["status"] for s in statuses] == ["ready", "ready"]
    assert all({p["name"] for p in s["peers"]} == {t["name"] for t in statuses} for s in statuses)
    alerts = [labels for group in CLUSTER_GROUPS.values() for labels in group]
    fps = {name: sorted(fingerprint(labels) for labels in group) for name, group in CLUSTER_GROUPS.items()}
    starts_at = _started()

    # Prometheus sends every alert to every Alertmanager, with the same startsAt.
    await asyncio.gather(*(am.fire(labels, starts_at=starts_at) for am in members for labels in alerts))
    for am in members:
        assert sorted((await _am_fingerprints(am)).values()) == sorted(fp for g in fps.values() for fp in g)
    # Every member flushed every group with both alerts firing and acted on it: sent its
    # webhook (answered), or found in the gossiped notification log that its peer had.
    await wait_decided(members, fps.values(), resolved=False)
    await service.events.wait_types({"incident.opened": 3, "page.sent": 3}, WAIT)
    accepted = await _all_processed(service)
    sent = await _webhooks_sent(members)

    opened = _by_alertname(_of_type(service, "incident.opened"))
    assert set(opened) == set(CLUSTER_GROUPS), [e["type"] for e in service.events.events]
    ids = {name: e["subject"] for name, e in opened.items()}
    for name, event in opened.items():
        data = event["data"]
        assert data["severity"] == CLUSTER_SEVERITIES[name]
        assert data["group_labels"] == {k: CLUSTER_GROUPS[name][0][k] for k in GROUP_BY}
    # Both alerts of a group in its one incident: in the first notification, or the next one.
    for name, incident_id in ids.items():
        *_, latest = (e for e in _incident_events(service) if e["subject"] == incident_id)
        assert latest["data"]["firing_fingerprints"] == latest["data"]["fingerprints"] == fps[name]
    pages = _of_type(service, "page.sent")
    assert Counter((p["subject"], p["data"]["page"]["action"]) for p in pages) == {
        (incident_id, "trigger"): 1 for incident_id in ids.values()
    }, f"webhooks sent per member: {sent}"
    assert await _metric(service, "incidentd_incidents_opened_total") == 3
    assert await _metric(service, "incidentd_pages_sent_total", action="trigger") == 3
    # However many webhooks the cluster sent, every alert after its first sighting changed nothing.
    assert await _metric(service, "incidentd_alerts_deduplicated_total") == accepted - len(alerts), sent
    kinds = Counter(_suffix(service, e["type"]) for e in service.events.events)
    assert set(kinds) <= {"incident.opened", "incident.updated", "page.sent"}, kinds

    # Resolved through both members: one incident.resolved and one close page per group.
    ends_at = datetime.now(UTC)
    await asyncio.gather(
        *(am.resolve(labels, starts_at=starts_at, ends_at=ends_at) for am in members for labels in alerts)
    )
    await wait_decided(members, fps.values(), resolved=True)
    await service.events.wait_types({"incident.resolved": 3, "page.sent": 6}, WAIT)
    accepted = await _all_processed(service)
    sent = await _webhooks_sent(members)

    resolved = _by_alertname(_of_type(service, "incident.resolved"))
    assert {name: e["subject"] for name, e in resolved.items()} == ids
    for name, event in resolved.items():
        data = event["data"]
        assert data["status"] == "resolved"
        assert data["firing_fingerprints"] == []
        assert data["fingerprints"] == fps[name]
        assert data["severity"] == CLUSTER_SEVERITIES[name]
    assert _of_type(service, "incident.reopened") == [], f"webhooks sent per member: {sent}"
    assert len(_of_type(service, "incident.opened")) == 3
    pages = _of_type(service, "page.sent")
    assert Counter((p["subject"], p["data"]["page"]["action"]) for p in pages) == {
        (incident_id, action): 1 for incident_id in ids.values() for action in ("trigger", "close")
    }, f"webhooks sent per member: {sent}"
    assert await _metric(service, "incidentd_pages_sent_total", action="close") == 3
    assert await _metric(service, "incidentd_alerts_ignored_total") == 0
    assert await _metric(service, "incidentd_alerts_deduplicated_total") == accepted - 2 * len(alerts), sent
    # The latest word on every incident is its resolve: no late firing reopened or updated it.
    for incident_id in ids.values():
        *_, latest = (e for e in _incident_events(service) if e["subject"] == incident_id)
        assert _suffix(service, latest["type"]) == "incident.resolved"
    kinds = Counter(_suffix(service, e["type"]) for e in service.events.events)
    assert set(kinds) <= {"incident.opened", "incident.updated", "incident.resolved", "page.sent"}, kinds
    _check_every_event(service, event_data_validator)
