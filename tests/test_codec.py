"""An incident row's alert states are written by orjson from the dataclasses themselves: the
same bytes ``AlertState.to_json()`` gave, on orjson's path and on the standard library's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from pydantic import TypeAdapter

from service.jsonfast import dumps, loads
from service.models import AlertState, AlertStatus, Incident
from service.store.codec import dump_incident, load_incident
from tests.support.incidents import make_incident

# What a webhook's times are once pydantic parsed them: its own tzinfo, not datetime.UTC.
PARSED = TypeAdapter(datetime).validate_json(b'"2026-11-26T10:00:00.250Z"')
OFFSET = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
PLAIN = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def states() -> dict[str, AlertState]:
    return {
        "aa00000000000001": AlertState(
            AlertStatus.FIRING, PARSED, "SEV-2", "ApiDown", labels={"alertname": "ApiDown", "zone": "é"}
        ),
        "aa00000000000002": AlertState(
            AlertStatus.RESOLVED,
            OFFSET,
            "SEV-3",
            "DiskFull",
            resolved_starts_at=OFFSET,
            labels={"alertname": "DiskFull"},
            ends_at=PLAIN,
            expired=True,
        ),
        "aa00000000000003": AlertState(
            AlertStatus.FIRING, PLAIN, "SEV-1", "Down", labels={"alertname": "Down"}, ends_at=PARSED
        ),
    }


def with_states(inc: Incident) -> Incident:
    inc.alerts = states()
    inc.firing_count = 2
    return inc


def row(inc: Incident, data: str) -> SimpleNamespace:
    return SimpleNamespace(id=inc.id, group_key=inc.group_key, data=data, is_current=True, version=1)


def test_alert_states_are_written_as_their_to_json() -> None:
    written = dumps(states())
    assert written == dumps({fp: s.to_json() for fp, s in states().items()})
    assert loads(written)["aa00000000000002"]["starts_at"] == "2026-11-26T12:00:00.123456+02:00"
    assert loads(written)["aa00000000000001"]["starts_at"] == "2026-11-26T10:00:00.250000Z"


@pytest.mark.parametrize("huge", [False, True], ids=["orjson", "standard-library"])
def test_an_incident_row_round_trips_its_alert_states(huge: bool) -> None:
    inc = with_states(make_incident())
    if huge:
        # An integer wider than 64 bits (a person's note, say) sends the row through json.
        inc.latest_note = {"text": "n", "ticket": 2**70}
    data = dump_incident(inc)
    assert loads(data)["alerts"] == {fp: s.to_json() for fp, s in states().items()}
    back = load_incident(row(inc, data))
    assert back.alerts == states()
    assert back.latest_note == inc.latest_note
