"""Noise control as pure decisions: the gate (silences, windows, inhibition, thresholds), the
correlator's flap dampening, and what `rules check` says about a broken noise.yaml."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.batch import Batch
from service.escalate.policy import EscalationPolicy
from service.models import EXPIRED, AlertState, AlertStatus, HoldKind, Incident, IncidentStatus, PageAction
from service.quiet.gate import Gate
from service.quiet.stage import QuietStage, refresh_sources
from service.quiet.transitions import lift
from service.ruleset import RuleSet, load_rules
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


def test_every_alert_of_a_source_incident_that_differs_in_a_rule_label_inhibits() -> None:
    # The index adds one alert per distinct projection on the rules' labels: the alerts
    # that differ only in `instance` share one, those of another cluster or alertname not.
    source = incident(
        {"alertname": "Other", "cluster": "eu", "instance": "a"},
        {"alertname": "DatabaseUnavailable", "cluster": "eu", "instance": "a"},
        {"alertname": "DatabaseUnavailable", "cluster": "eu", "instance": "b"},
        {"alertname": "DatabaseUnavailable", "cluster": "us", "instance": "a"},
        iid="inc-db",
        paged=1,
    )
    for cluster in ("eu", "us"):
        target = incident({"alertname": "ApiDown", "cluster": cluster}, iid=f"inc-{cluster}")
        hold = gate.decide(target, MONDAY, [], [source])
        assert hold is not None and hold.by == "inc-db", cluster
    assert gate.decide(incident({"alertname": "ApiDown", "cluster": "ap"}), MONDAY, [], [source]) is None


class _Stored:
    """Open incidents as a store holds them, counting the ones decoded."""

    def __init__(self, *incs: Incident) -> None:
        self.rows = {i.id: i for i in incs}
        self.read: list[str] = []

    async def open_versions(self, limit: int) -> dict[str, int]:
        return {i.id: i.version for i in self.rows.values() if i.status is IncidentStatus.OPEN}

    async def get_many(self, ids: Sequence[str]) -> Sequence[Incident]:
        self.read += ids
        return [self.rows[i] for i in ids]


async def test_inhibition_sources_are_read_again_only_where_the_store_changed() -> None:
    source = incident({"alertname": "DatabaseUnavailable", "cluster": "eu"}, iid="inc-db", paged=1)
    other = incident({"alertname": "DatabaseUnavailable", "cluster": "us"}, iid="inc-us", paged=1)
    source.version = other.version = 1
    stored = _Stored(source, other)
    target = incident({"alertname": "ApiDown", "cluster": "eu"})
    index = gate.index([])
    assert await refresh_sources(index, stored) == 2
    hold = gate.decide(target, MONDAY, [], index)
    assert hold is not None and hold.by == "inc-db"
    assert await refresh_sources(index, stored) == 0  # nothing changed: nothing decoded again
    # This consumer's own copy (read at version 0, not yet stored) is taken at once, and not
    # read back once its commit stored it (version 1).
    index.update([incident({"alertname": "DatabaseUnavailable", "cluster": "ap"}, iid="inc-ap")])
    ap = incident({"alertname": "DatabaseUnavailable", "cluster": "ap"}, iid="inc-ap")
    ap.version = 1
    stored.rows["inc-ap"] = ap
    assert await refresh_sources(index, stored) == 0
    # A copy whose commit lost a race (the store has another version than it would write) is.
    index.update([ap])
    assert await refresh_sources(index, stored) == 1 and stored.read[-1] == "inc-ap"
    # Another replica moved the us source to eu, then resolved the eu one: read, and forgotten.
    moved = incident({"alertname": "DatabaseUnavailable", "cluster": "eu"}, iid="inc-us", paged=1)
    moved.version = 2
    stored.rows["inc-us"] = moved
    source.status = IncidentStatus.RESOLVED
    assert await refresh_sources(index, stored) == 1 and stored.read[-1] == "inc-us"
    hold = gate.decide(target, MONDAY, [], index)
    assert hold is not None and hold.by == "inc-us"
    assert "inc-db" not in index.versions


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
    assert "noise.yaml:5:18: time_intervals[0].time_intervals[0].times[0].start_time: " in text
    assert "invalid regex" in text and "noise.yaml:11:23: inhibit_rules[0].source_matchers[0]: " in text
    assert "noise.yaml:14:5: thresholds[0]: give at least one of min_firing, firing_for or burst" in text


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
    assert "noise.yaml:5:22: maintenance[0].time_intervals[0]: unknown time interval 'weekends'" in text
    assert "noise.yaml:10:5: heartbeats[0].severity: unknown severity 'SEV-9'" in text


# -- the quiet stage on the correlator's output, with stand-in stores --------------------


class _Silences:
    def __init__(self, items: list[FakeSilence]) -> None:
        self.items = items

    async def active(self, now: datetime) -> list[FakeSilence]:
        return self.items


class _Incidents:
    """No incident stored but the batch's own."""

    async def open_versions(self, limit: int) -> dict[str, int]:
        return {}

    async def get_many(self, ids: Sequence[str]) -> Sequence[Incident]:
        return []


class _Timers:
    async def latest_reminder(self, incident_id: str, opening: int) -> int:
        return 0


@dataclass
class _Store:
    silences: _Silences
    incidents: _Incidents
    timers: _Timers


class QuietHarness(Harness):
    """The correlator and the quiet stage, as the pipeline runs them."""

    def __init__(self, rules: RuleSet, silences: list[FakeSilence] = []) -> None:  # noqa: B006
        super().__init__(rules)
        self.stage = QuietStage(rules, _Store(_Silences(silences), _Incidents(), _Timers()))

    async def pages(self, *docs: dict[str, object], at: datetime) -> list[tuple[str, int, str]]:
        out = self.feed(*docs, at=at)
        batch = Batch(
            records=[], now=at, changed=dict(out.changed), events=list(out.events), pages=list(out.pages)
        )
        batch = await self.stage(batch)
        return [(p.action.value, p.opening, p.target) for p in batch.pages]


def api_down(status: str = "firing", starts: str = "2026-11-26T10:00:00Z") -> dict[str, object]:
    return webhook(alert("ApiDown", status, starts_at=starts, namespace="web"))


async def test_a_resolve_and_a_new_firing_in_one_batch_close_the_old_page(rules: RuleSet) -> None:
    h = QuietHarness(rules)
    assert await h.pages(api_down(), at=MONDAY) == [("trigger", 1, "first")]
    both = [api_down("resolved"), api_down(starts="2026-11-26T10:05:00Z")]
    pages = await h.pages(*both, at=MONDAY + timedelta(minutes=6))
    assert pages == [("close", 1, "first"), ("trigger", 2, "first")]


async def test_a_silenced_blip_that_fires_and_resolves_in_one_batch_pages_nobody(rules: RuleSet) -> None:
    h = QuietHarness(rules, [silence('alertname="ApiDown"')])
    assert await h.pages(api_down(), api_down("resolved"), at=MONDAY) == []
    [inc] = h.incidents
    assert inc.paged == 0 and inc.hold is not None and inc.snapshot()["suppression"] is None


async def test_a_held_flapping_series_sends_no_flapping_update(tmp_path: Path) -> None:
    h = QuietHarness(load_rules(noise_rules(tmp_path, FLAPPING)), [silence('alertname="SlowResponses"')])
    sent: list[tuple[str, int, str]] = []
    for flap in range(5):
        at = MONDAY + timedelta(minutes=2 * flap)
        starts = at.isoformat().replace("+00:00", "Z")
        slow = alert("SlowResponses", starts_at=starts, namespace="web")
        sent += await h.pages(webhook(slow), at=at)
        sent += await h.pages(webhook({**slow, "status": "resolved"}), at=at + timedelta(minutes=1))
    [inc] = h.incidents
    assert inc.flapping is not None
    assert sent == []


def test_a_re_send_without_starts_at_extends_the_alert(rules: RuleSet) -> None:
    def without_starts_at(ends: str) -> dict[str, object]:
        doc = alert("Pushed", ends_at=ends, namespace="jobs")
        del doc["startsAt"]
        return webhook(doc)

    h = Harness(rules)
    h.feed(without_starts_at("2026-11-30T09:05:00Z"), at=MONDAY)
    out = h.feed(without_starts_at("2026-11-30T09:09:00Z"), at=MONDAY + timedelta(minutes=4))
    [inc] = h.incidents
    [state] = inc.alerts.values()
    assert out.duplicates == 1 and state.ends_at == datetime(2026, 11, 30, 9, 9, tzinfo=UTC)


def _pushed(status: str, ends: str, *, expired: bool = False) -> dict[str, object]:
    doc = alert("Pushed", status, starts_at="2026-11-30T09:00:00Z", ends_at=ends, namespace="jobs")
    if expired:
        doc["annotations"] = {EXPIRED: "true"}
    return webhook(doc)


def test_our_expiry_of_an_alert_extended_meanwhile_is_dropped(rules: RuleSet) -> None:
    h = Harness(rules)
    h.feed(_pushed("firing", "2026-11-30T09:04:00Z"), at=MONDAY)
    h.feed(_pushed("firing", "2026-11-30T09:08:00Z"), at=MONDAY + timedelta(minutes=3))  # a re-send
    out = h.feed(_pushed("resolved", "2026-11-30T09:04:00Z", expired=True), at=MONDAY + timedelta(minutes=5))
    [inc] = h.incidents
    assert out.duplicates == 1 and inc.status is IncidentStatus.OPEN


def test_a_re_send_after_our_expiry_revives_the_alert(rules: RuleSet) -> None:
    h = Harness(rules)
    h.feed(_pushed("firing", "2026-11-30T09:04:00Z"), at=MONDAY)
    h.feed(_pushed("resolved", "2026-11-30T09:04:00Z", expired=True), at=MONDAY + timedelta(minutes=5))
    [inc] = h.incidents
    assert inc.status is IncidentStatus.RESOLVED
    out = h.feed(_pushed("firing", "2026-11-30T09:12:00Z"), at=MONDAY + timedelta(minutes=8))
    assert h.types(out) == ["incident.reopened"] and inc.status is IncidentStatus.OPEN
    # And its producer's own resolve of that episode still closes it.
    out = h.feed(_pushed("resolved", "2026-11-30T09:10:00Z"), at=MONDAY + timedelta(minutes=10))
    assert h.types(out) == ["incident.resolved"]


def test_held_since_the_first_hold_and_the_lift_moves_the_deadline_by_all_of_it(rules: RuleSet) -> None:
    inc = incident({"alertname": "DiskFull"}, paged=1)
    inc.opening = 1
    first = gate.decide(inc, MONDAY, [silence('alertname="DiskFull"')], [])
    assert first is not None
    inc.hold = first
    second = FakeSilence("s-2", (Matcher.parse('alertname="DiskFull"'),), MONDAY + timedelta(hours=3))
    later = gate.decide(inc, MONDAY + timedelta(hours=1), [second], [])
    assert later is not None and later.by == "s-2" and later.since == MONDAY and later.paged
    inc.hold = later
    due = inc.response_due_at
    lift(inc, MONDAY + timedelta(hours=3), rules, EscalationPolicy(rules), reminders=0)
    assert inc.response_due_at == due + timedelta(hours=3)


def test_two_alerts_on_both_sides_of_a_rule_do_not_mute_each_other() -> None:
    noise = NoiseFile.model_validate(
        {
            "inhibit_rules": [
                {
                    "source_matchers": ['alertname="NodeDown"'],
                    "target_matchers": ['severity="warning"'],
                    "equal": ["cluster"],
                }
            ]
        }
    )
    a = incident(
        {"alertname": "NodeDown", "severity": "warning", "cluster": "c", "node": "1"}, iid="a", paged=1
    )
    b = incident(
        {"alertname": "NodeDown", "severity": "warning", "cluster": "c", "node": "2"}, iid="b", paged=1
    )
    assert Gate(noise).decide(a, MONDAY, [], [a, b]) is None
    # A one-sided target is still muted by it.
    disk = incident({"alertname": "DiskSlow", "severity": "warning", "cluster": "c"}, iid="d")
    assert Gate(noise).decide(disk, MONDAY, [], [a, b]) is not None


def test_one_firing_alert_no_threshold_gates_is_enough_to_open() -> None:
    inc = incident({"alertname": "Three", "pod": "a"}, {"alertname": "Unthresholded"})
    assert gate.decide(inc, MONDAY, [], []) is None


def test_a_lift_escalates_the_conditions_its_alerts_matched_while_held(rules: RuleSet) -> None:
    inc = incident({"alertname": "Leak", "data_breach": "true"})
    inc.hold = gate.decide(incident({"alertname": "Slow"}), MONDAY, [], [])
    assert inc.hold is not None
    lifted = lift(inc, MONDAY + timedelta(minutes=10), rules, EscalationPolicy(rules), reminders=0)
    [page] = lifted.pages
    assert {"Security", "Legal"} <= set(page.roles)
    assert [e.type for e in lifted.events] == ["incident.escalated", "incident.unsuppressed"]


PENDING_SOURCE = """
inhibit_rules:
  - name: db-explains-api
    source_matchers: ['alertname="DatabaseUnavailable"']
    target_matchers: ['alertname="ApiDown"']
    equal: [cluster]
thresholds:
  - name: db-must-last
    matchers: ['alertname="DatabaseUnavailable"']
    firing_for: 10m
"""


async def test_a_source_held_pending_in_its_own_batch_stops_inhibiting(tmp_path: Path) -> None:
    """The stage takes a batch's incidents into the inhibition index before their holds are
    decided; one the holds made pending is taken again after, and inhibits nothing more."""
    h = QuietHarness(load_rules(noise_rules(tmp_path, PENDING_SOURCE)))
    starts = MONDAY.isoformat()
    first_api = alert("ApiDown", starts_at=starts, cluster="eu", namespace="web")
    db = alert("DatabaseUnavailable", starts_at=starts, cluster="eu", namespace="db")
    # The target comes first, so the index is read while the database incident has no hold.
    await h.pages(webhook(first_api, db), at=MONDAY)
    [held_db] = [i for i in h.incidents if i.group_labels["alertname"] == "DatabaseUnavailable"]
    assert held_db.hold is not None and held_db.hold.kind is HoldKind.PENDING
    later_api = alert("ApiDown", starts_at=starts, cluster="eu", namespace="checkout")
    assert await h.pages(webhook(later_api), at=MONDAY + timedelta(minutes=1)) == [("trigger", 1, "first")]
