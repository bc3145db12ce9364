"""The incident state machine, in memory, with an explicit clock."""

from datetime import datetime, timedelta

import pytest

from service.classify.classifier import Classifier
from service.correlate.correlator import Correlator, Outcome
from service.ingest.parse import parse_document
from service.models import Incident, IncidentStatus
from service.ruleset import RuleSet
from tests.support.payloads import alert
from tests.support.time import T0


class Harness:
    def __init__(self, rules: RuleSet) -> None:
        self.classifier = Classifier(rules)
        self.correlator = Correlator(rules, describe=self.classifier.describe)
        self.current: dict[str, Incident] = {}
        self.now = T0

    def feed(self, *docs: dict[str, object], at: datetime | None = None) -> Outcome:
        now = at or self.now
        alerts = [self.classifier.classify(a) for d in docs for a in parse_document(d, now)]
        out = self.correlator.apply(alerts, self.current, now)
        for inc in out.changed.values():
            inc.version += 1  # what the store does on write
        return out

    def types(self, out: Outcome) -> list[str]:
        return [e.type for e in out.events]

    @property
    def incidents(self) -> list[Incident]:
        return list(self.current.values())


@pytest.fixture
def h(rules: RuleSet) -> Harness:
    return Harness(rules)


def test_new_alert_opens_incident_with_response_due_from_severity(h: Harness) -> None:
    out = h.feed(alert("ApiDown", namespace="aragora"))
    assert h.types(out) == ["incident.opened"]
    [inc] = h.incidents
    assert inc.severity == "SEV-1"
    assert inc.title == "ApiDown is happening"  # rendered only for the alert that opened it
    assert inc.response_due_at == T0 + timedelta(minutes=15)
    assert [(p.action, p.opening) for p in out.pages] == [("trigger", 1)]


def test_redelivered_alert_changes_nothing(h: Harness) -> None:
    h.feed(alert("ApiDown", namespace="aragora"))
    out = h.feed(alert("ApiDown", namespace="aragora"), alert("ApiDown", namespace="aragora"))
    assert (out.events, out.pages, out.changed, out.duplicates) == ([], [], {}, 2)


def test_same_alert_three_times_in_one_batch_is_one_incident_one_page(h: Harness) -> None:
    doc = alert("ApiDown", namespace="aragora")
    out = h.feed(doc, doc, doc)
    assert h.types(out) == ["incident.opened"]
    assert len(out.pages) == 1
    assert out.duplicates == 2


def test_new_alert_in_group_updates_and_severity_only_rises(h: Harness) -> None:
    h.feed(alert("SlowResponses", namespace="aragora", pod="a", severity="warning"))
    [inc] = h.incidents
    assert inc.severity == "SEV-3"
    # Another pod: same group (pod is not in group_by), so the same incident.
    out = h.feed(alert("SlowResponses", namespace="aragora", pod="b"))
    assert h.types(out) == ["incident.updated"]
    assert out.events[0].extra["reasons"] == ["alert_added"]
    assert out.pages == []


def test_severity_rises_to_highest_alert_and_never_falls(h: Harness) -> None:
    h.feed(alert("Custom", namespace="n", pod="a", severity="info"))
    [inc] = h.incidents
    assert inc.severity == "SEV-4"
    out = h.feed(alert("Custom", namespace="n", pod="b", severity="critical"))
    assert inc.severity == "SEV-2"
    assert "severity_raised:SEV-4->SEV-2" in out.events[0].extra["reasons"]
    h.feed(alert("Custom", namespace="n", pod="c", severity="warning"))
    assert inc.severity == "SEV-2"


def test_incident_resolves_when_every_alert_resolved(h: Harness) -> None:
    h.feed(alert("ApiDown", namespace="n", pod="a"), alert("ApiDown", namespace="n", pod="b"))
    out = h.feed(alert("ApiDown", status="resolved", namespace="n", pod="a"))
    assert h.types(out) == ["incident.updated"]
    assert h.incidents[0].status is IncidentStatus.OPEN
    out = h.feed(alert("ApiDown", status="resolved", namespace="n", pod="b"))
    assert h.types(out) == ["incident.resolved"]
    assert h.incidents[0].status is IncidentStatus.RESOLVED
    assert h.incidents[0].resolved_at == T0
    assert [(p.action, p.opening) for p in out.pages] == [("close", 1)]


def test_refire_within_reopen_window_reopens_same_incident(h: Harness) -> None:
    h.feed(alert("ApiDown", namespace="n"))
    h.feed(alert("ApiDown", status="resolved", namespace="n"))
    [inc] = h.incidents
    later = T0 + timedelta(minutes=10)
    out = h.feed(alert("ApiDown", namespace="n", starts_at="2026-11-26T12:09:00Z"), at=later)
    assert h.types(out) == ["incident.reopened"]
    assert h.incidents == [inc]
    assert inc.status is IncidentStatus.OPEN and inc.opening == 2
    assert [(p.action, p.opening) for p in out.pages] == [("trigger", 2)]


def test_refire_after_reopen_window_opens_a_new_incident(h: Harness) -> None:
    h.feed(alert("ApiDown", namespace="n"))
    h.feed(alert("ApiDown", status="resolved", namespace="n"))
    [old] = h.incidents
    later = T0 + timedelta(minutes=31)
    out = h.feed(alert("ApiDown", namespace="n", starts_at="2026-11-26T12:30:00Z"), at=later)
    assert h.types(out) == ["incident.opened"]
    [new] = h.incidents
    assert new.id != old.id and old.is_current is False
    assert old.id in out.changed  # retired in the same transaction


def test_late_and_stale_deliveries_are_duplicates(h: Harness) -> None:
    h.feed(alert("ApiDown", namespace="n"))
    h.feed(alert("ApiDown", status="resolved", namespace="n"))
    # The firing notification of the same episode, delivered after its resolve.
    out = h.feed(alert("ApiDown", namespace="n"))
    assert (out.events, out.duplicates) == ([], 1)
    # A resolve of an older episode.
    out = h.feed(alert("ApiDown", status="resolved", starts_at="2026-11-26T09:00:00Z", namespace="n"))
    assert (out.events, out.duplicates) == ([], 1)


def test_resolve_with_older_starts_at_still_resolves(h: Harness) -> None:
    # Alertmanager replaces an alert resolved with an end before its start and sends
    # the resolve with startsAt == endsAt, older than the firing one we stored.
    h.feed(alert("ApiDown", namespace="n", starts_at="2026-11-26T10:00:00Z"))
    out = h.feed(
        alert(
            "ApiDown",
            status="resolved",
            namespace="n",
            starts_at="2026-11-26T09:59:00Z",
            ends_at="2026-11-26T09:59:00Z",
        )
    )
    assert h.types(out) == ["incident.resolved"]


def test_resolve_for_never_seen_alert_is_ignored(h: Harness) -> None:
    out = h.feed(alert("ApiDown", status="resolved", namespace="n"))
    assert (out.events, out.pages, out.ignored) == ([], [], 1)


def test_storm_in_one_group_merges_updates_in_bounded_events(h: Harness) -> None:
    docs = [alert("SlowResponses", namespace="n", pod=f"p{i}") for i in range(250)]
    out = h.feed(*docs)
    assert h.types(out) == ["incident.opened", "incident.updated", "incident.updated", "incident.updated"]
    assert [len(e.extra["alerts"]) for e in out.events[1:]] == [100, 100, 49]
    # Each merged event's snapshot is the incident as it was when that event closed.
    assert [len(e.incident["fingerprints"]) for e in out.events] == [1, 101, 201, 250]
    assert len(out.pages) == 1


def test_update_then_resolve_in_one_batch_keep_their_own_snapshots(h: Harness) -> None:
    h.feed(alert("ApiDown", namespace="n", pod="a"))
    out = h.feed(
        alert("ApiDown", namespace="n", pod="b"),
        alert("ApiDown", status="resolved", namespace="n", pod="a"),
        alert("ApiDown", status="resolved", namespace="n", pod="b"),
    )
    assert h.types(out) == ["incident.updated", "incident.resolved"]
    assert out.events[0].incident["status"] == "open"
    assert out.events[0].incident["firing_fingerprints"] != []
    assert out.events[1].incident["status"] == "resolved"


def test_late_resolve_of_an_older_episode_does_not_close_the_current_one(h: Harness) -> None:
    h.feed(alert("ApiDown", namespace="n", starts_at="2026-11-26T10:00:00Z"))
    old_resolve = alert("ApiDown", status="resolved", namespace="n", starts_at="2026-11-26T10:00:00Z")
    h.feed(old_resolve)
    h.feed(alert("ApiDown", namespace="n", starts_at="2026-11-26T11:50:00Z"))  # reopens
    out = h.feed(old_resolve)  # the first episode's resolve again, from a lagging HA peer
    assert (out.events, out.pages, out.duplicates) == ([], [], 1)
    assert h.incidents[0].status is IncidentStatus.OPEN


def test_raised_severity_brings_the_response_deadline_forward(h: Harness) -> None:
    h.feed(alert("Custom", namespace="n", pod="a", severity="warning"))
    [inc] = h.incidents
    assert inc.response_due_at == T0 + timedelta(hours=2)
    h.feed(alert("Custom", namespace="n", pod="b", severity="critical"), at=T0 + timedelta(minutes=10))
    assert inc.response_due_at == T0 + timedelta(minutes=40)  # SEV-2: 30 min from the raise
