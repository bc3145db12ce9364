"""Noise control as pure decisions: the gate (silences, windows, inhibition, thresholds), the
correlator's flap dampening, and what `rules check` says about a broken noise.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.models import AlertState, AlertStatus, HoldKind, Incident, IncidentStatus, PageAction
from service.quiet.gate import Gate
from service.ruleset import load_rules
from service.ruleset.errors import RulesError
from service.ruleset.matchers import Matcher
from service.ruleset.noise import NoiseFile
from tests.support.noise import noise_rules
from tests.support.payloads import alert, webhook
from tests.test_correlator import Harness

NOISE = NoiseFile.model_validate(
    {
        "time_intervals": [
            {
                "name": "sunday-night",
                "time_intervals": [
                    {"weekdays": ["sunday"], "times": [{"start_time": "02:00", "end_time": "04:00"}]}
                ],
            }
        ],
        "maintenance": [
            {"name": "db-work", "matchers": ['service="postgres"'], "time_intervals": ["sunday-night"]}
        ],
        "inhibit_rules": [
            {
                "name": "db-explains-api",
                "source_matchers": ['alertname="DatabaseUnavailable"'],
                "target_matchers": ['alertname="ApiDown"'],
                "equal": ["cluster"],
            }
        ],
        "thresholds": [
            {"name": "need-three", "matchers": ['alertname="Three"'], "min_firing": 3},
            {"name": "need-ten-minutes", "matchers": ['alertname="Slow"'], "firing_for": "10m"},
            {
                "name": "need-a-burst",
                "matchers": ['alertname="Burst"'],
                "burst": {"count": 3, "within": "5m"},
            },
        ],
    }
)
SUNDAY_3AM = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)  # a Sunday
MONDAY = SUNDAY_3AM + timedelta(days=1)


@dataclass(frozen=True)
class FakeSilence:
    id: str
    matchers: tuple[Matcher, ...]
    ends_at: datetime
    created_by: str = "alice"
    comment: str = "db maintenance"

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


def incident(
    *labels: dict[str, str], opened: datetime = MONDAY, iid: str = "inc-1", paged: int = 0
) -> Incident:
    alerts = {
        f"fp{i}": AlertState(AlertStatus.FIRING, opened, "SEV-2", ls["alertname"], labels=ls)
        for i, ls in enumerate(labels)
    }
    return Incident(
        id=iid,
        group_key=iid,
        group_labels={},
        title=iid,
        impact="",
        severity="SEV-2",
        status=IncidentStatus.OPEN,
        opened_at=opened,
        response_due_at=opened + timedelta(minutes=30),
        alerts=alerts,
        paged=paged,
    )


def silence(*matchers: str, ends: datetime = MONDAY + timedelta(hours=1)) -> FakeSilence:
    return FakeSilence("s-1", tuple(Matcher.parse(m) for m in matchers), ends)


gate = Gate(NOISE)


def test_an_incident_is_silenced_only_when_every_firing_alert_is() -> None:
    one = incident({"alertname": "DiskFull", "instance": "db-1"})
    hold = gate.decide(one, MONDAY, [silence('alertname="DiskFull"')], [])
    assert hold is not None and hold.kind is HoldKind.SILENCED
    assert (hold.by, hold.until, hold.since) == ("s-1", MONDAY + timedelta(hours=1), MONDAY)
    assert hold.reason == "silenced by alice: db maintenance"
    two = incident(
        {"alertname": "DiskFull", "instance": "db-1"}, {"alertname": "DiskFull2", "instance": "db-2"}
    )
    assert gate.decide(two, MONDAY, [silence('alertname="DiskFull"')], []) is None


def test_a_resolved_alert_does_not_need_a_silence() -> None:
    inc = incident({"alertname": "DiskFull"}, {"alertname": "Other"})
    inc.set_alert(
        "fp1", AlertState(AlertStatus.RESOLVED, MONDAY, "SEV-2", "Other", labels={"alertname": "Other"})
    )
    assert gate.decide(inc, MONDAY, [silence('alertname="DiskFull"')], []) is not None


def test_a_maintenance_window_mutes_while_it_is_on_and_says_when_it_ends() -> None:
    inc = incident({"alertname": "Replication", "service": "postgres"})
    hold = gate.decide(inc, SUNDAY_3AM, [], [])
    assert hold is not None and hold.kind is HoldKind.MAINTENANCE
    assert (hold.by, hold.until) == ("db-work", SUNDAY_3AM + timedelta(hours=1))
    assert gate.decide(inc, SUNDAY_3AM + timedelta(hours=1), [], []) is None
    assert gate.decide(incident({"alertname": "Replication", "service": "redis"}), SUNDAY_3AM, [], []) is None


def test_inhibition_needs_an_open_source_that_agrees_on_the_equal_labels() -> None:
    target = incident({"alertname": "ApiDown", "cluster": "eu"})
    source = incident({"alertname": "DatabaseUnavailable", "cluster": "eu"}, iid="inc-db", paged=1)
    other_cluster = incident({"alertname": "DatabaseUnavailable", "cluster": "us"}, iid="inc-us", paged=1)
    hold = gate.decide(target, MONDAY, [], [source, target])
    assert hold is not None and hold.kind is HoldKind.INHIBITED and hold.by == "inc-db"
    assert hold.until is None and "caused by inc-db" in hold.reason
    assert gate.decide(target, MONDAY, [], [other_cluster]) is None
    source.status = IncidentStatus.RESOLVED
    assert gate.decide(target, MONDAY, [], [source]) is None


def test_min_firing_holds_the_incident_pending_until_enough_fire() -> None:
    inc = incident({"alertname": "Three", "pod": "a"}, {"alertname": "Three", "pod": "b"})
    hold = gate.decide(inc, MONDAY, [], [])
    assert hold is not None and hold.kind is HoldKind.PENDING
    assert hold.reason == "threshold need-three: waiting for 3 firing (2 now)"
    third = incident(
        {"alertname": "Three", "pod": "a"},
        {"alertname": "Three", "pod": "b"},
        {"alertname": "Three", "pod": "c"},
    )
    assert gate.decide(third, MONDAY, [], []) is None


def test_firing_for_is_met_with_time_and_says_when() -> None:
    inc = incident({"alertname": "Slow"})
    hold = gate.decide(inc, MONDAY + timedelta(minutes=4), [], [])
    assert hold is not None and hold.until == MONDAY + timedelta(minutes=10)
    assert gate.decide(inc, MONDAY + timedelta(minutes=10), [], []) is None


def test_a_burst_opens_when_enough_alerts_started_within_the_window() -> None:
    inc = incident(*({"alertname": "Burst", "pod": p} for p in "ab"))
    assert gate.decide(inc, MONDAY, [], []) is not None
    inc.set_alert(
        "late", AlertState(AlertStatus.FIRING, MONDAY, "SEV-2", "Burst", labels={"alertname": "Burst"})
    )
    assert gate.decide(inc, MONDAY, [], []) is None
    # The same three spread over more than five minutes are no burst.
    old = incident(*({"alertname": "Burst", "pod": p} for p in "abc"), opened=MONDAY - timedelta(minutes=6))
    assert gate.decide(old, MONDAY, [], []) is not None


def test_a_threshold_gates_the_opening_only_once_it_paged() -> None:
    inc = incident({"alertname": "Three"}, paged=1)
    inc.opening = 1
    assert gate.decide(inc, MONDAY, [], []) is None


FLAPPING = """
flapping:
  reopens: 2
  within: 1h
  quiet: 30m
"""


def test_a_flapping_series_pages_once_restarts_no_clock_and_closes_after_quiet(tmp_path: Path) -> None:
    h = Harness(load_rules(noise_rules(tmp_path, FLAPPING)))
    triggers, closes, updates, openings = [], [], [], []
    for flap in range(10):
        at = MONDAY + timedelta(minutes=2 * flap)
        starts = at.isoformat().replace("+00:00", "Z")
        fired = h.feed(webhook(alert("SlowResponses", starts_at=starts, namespace="web")), at=at)
        resolved = h.feed(
            webhook(alert("SlowResponses", "resolved", starts_at=starts, namespace="web")),
            at=at + timedelta(minutes=1),
        )
        pages = fired.pages + resolved.pages
        triggers.append(sum(p.action is PageAction.TRIGGER for p in pages))
        closes.append(sum(p.action is PageAction.CLOSE for p in pages))
        updates += [p.message for p in pages if p.action is PageAction.UPDATE]
        [inc] = h.incidents
        openings.append(inc.opening)
    # The first opening and two reopens page as ever; the third reopen is the flapping series'
    # one page; the seven flaps after it page no one and close nothing.
    assert triggers == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert closes == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert openings == [1, 2, 3, 4, 4, 4, 4, 4, 4, 4]
    assert len(updates) == 1 and updates[0] is not None and "flapping" in updates[0]
    [inc] = h.incidents
    assert inc.flapping is not None and inc.flapping.flaps == 6
    assert inc.status is IncidentStatus.RESOLVED
    # Its response clock is the series' own: it did not restart at any flap.
    assert inc.opening_started_at == MONDAY + timedelta(minutes=6)


def test_reopens_spread_beyond_the_window_are_no_flapping(tmp_path: Path) -> None:
    h = Harness(load_rules(noise_rules(tmp_path, FLAPPING.replace("1h", "45m"))))
    for flap in range(5):
        at = MONDAY + timedelta(minutes=25 * flap)
        starts = at.isoformat().replace("+00:00", "Z")
        fired = h.feed(webhook(alert("SlowResponses", starts_at=starts, namespace="web")), at=at)
        h.feed(
            webhook(alert("SlowResponses", "resolved", starts_at=starts, namespace="web")),
            at=at + timedelta(minutes=1),
        )
        assert [p.action for p in fired.pages] == [PageAction.TRIGGER]
    [inc] = h.incidents
    assert inc.flapping is None


def test_rules_check_names_each_noise_problem_with_its_line(tmp_path: Path) -> None:
    folder = noise_rules(
        tmp_path,
        """
        time_intervals:
          - name: nights
            time_intervals:
              - times: [{start_time: "25:00", end_time: "26:00"}]
        maintenance:
          - name: db
            matchers: ['service="postgres"']
            time_intervals: [weekends]
        inhibit_rules:
          - source_matchers: ['alertname=~"(["']
            target_matchers: ['alertname="ApiDown"']
        thresholds:
          - name: nothing
            matchers: ['alertname="X"']
        heartbeats:
          - name: watchdog
            matchers: ['alertname="Watchdog"']
            interval: 5m
            severity: SEV-9
        """,
    )
    with pytest.raises(RulesError) as err:
        load_rules(folder)
    text = str(err.value)
    assert "noise.yaml: time_intervals[0].time_intervals[0].times[0].start_time (line 5)" in text
    assert "invalid regex" in text and "inhibit_rules[0].source_matchers[0] (line 11)" in text
    assert "thresholds[0] (line 14): give at least one of min_firing, firing_for or burst" in text


def test_rules_check_refuses_a_window_naming_an_unknown_interval(tmp_path: Path) -> None:
    folder = noise_rules(
        tmp_path,
        """
        maintenance:
          - name: db
            matchers: ['service="postgres"']
            time_intervals: [weekends]
        heartbeats:
          - name: watchdog
            matchers: ['alertname="Watchdog"']
            interval: 5m
            severity: SEV-9
        """,
    )
    with pytest.raises(RulesError) as err:
        load_rules(folder)
    text = str(err.value)
    assert "noise.yaml: maintenance[0].time_intervals[0] (line 5): unknown time interval 'weekends'" in text
    assert "heartbeats[0].severity (line 10): unknown severity 'SEV-9'" in text
