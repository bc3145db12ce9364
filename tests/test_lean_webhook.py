"""The webhook's hot path validates with LeanWebhookIn (no Python validator per alert, issue
#13) and must refuse exactly what WebhookIn refuses: what it lets through is stored and
paged without another look, and what it refuses takes the slow path for its message."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from service.ingest.parse import parse_webhook, validated_webhook
from service.ingest.payloads import MAX_ANNOTATIONS, MAX_LABELS, WebhookIn
from tests.support.time import T0


def _body(alert: dict[str, Any] | None = None, **top: Any) -> bytes:
    one = {"status": "firing", "labels": {"alertname": "DiskFull", "instance": "db-1"}, "annotations": {}}
    one.update(alert or {})
    doc = {"version": "4", "status": "firing", "receiver": "incidentd", "alerts": [one], **top}
    return json.dumps(doc).encode()


def _raw(text: str) -> bytes:
    """A body written by hand: escapes json.dumps would not write as they are here."""
    return text.encode()


BODIES = {
    "valid": _body(),
    "no alertname": _body({"labels": {"instance": "db-1"}}),
    "empty alertname": _body({"labels": {"alertname": "", "instance": "db-1"}}),
    "label name not a label name": _body({"labels": {"alertname": "X", "bad-name": "v"}}),
    "label value over its limit": _body({"labels": {"alertname": "X", "v": "x" * 4097}}),
    "annotation value over its limit": _body({"annotations": {"d": "x" * 65537}}),
    "labels at the limit": _body(
        {"labels": {"alertname": "X", **{f"l{n}": "v" for n in range(MAX_LABELS - 1)}}}
    ),
    "labels over the limit": _body(
        {"labels": {"alertname": "X", **{f"l{n}": "v" for n in range(MAX_LABELS)}}}
    ),
    "annotations over the limit": _body({"annotations": {f"a{n}": "v" for n in range(MAX_ANNOTATIONS + 1)}}),
    "NUL in a label value": _raw(
        '{"version":"4","status":"firing","alerts":[{"labels":{"alertname":"X","i":"a\\u0000b"}}]}'
    ),
    "NUL in an annotation name": _raw(
        '{"version":"4","status":"firing","alerts":[{"labels":{"alertname":"X"},"annotations":{"\\u0000":"v"}}]}'
    ),
    "NUL in generatorURL": _raw(
        '{"version":"4","status":"firing","alerts":[{"labels":{"alertname":"X"},"generatorURL":"h\\u0000"}]}'
    ),
    "NUL only in a field nobody uses": _raw(
        '{"version":"4","status":"firing","x":"\\u0000","alerts":[{"labels":{"alertname":"X"}}]}'
    ),
    "lone surrogate in a label value": _raw(
        '{"version":"4","status":"firing","alerts":[{"labels":{"alertname":"X","i":"\\ud800"}}]}'
    ),
    "startsAt as epoch seconds": _body({"startsAt": 1795694400}),
    "startsAt not a time": _body({"startsAt": "yesterday"}),
    "unknown status": _body({"status": "pending"}),
    "version 3": _body(version="3"),
    "generatorURL not text": _body({"generatorURL": 7}),
}


def _full_accepts(raw: bytes) -> bool:
    try:
        WebhookIn.model_validate_json(raw)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("name", list(BODIES))
def test_the_lean_path_refuses_exactly_what_the_full_model_refuses(name: str) -> None:
    raw = BODIES[name]
    assert (validated_webhook(raw) is not None) == _full_accepts(raw)


def test_both_kinds_of_body_are_among_the_cases() -> None:
    verdicts = {_full_accepts(raw) for raw in BODIES.values()}
    assert verdicts == {True, False}


def test_the_lean_path_gives_the_full_models_alerts() -> None:
    raw = _body(
        {"startsAt": "2026-11-26T10:00:00.123456789Z", "annotations": {"summary": "s"}, "fingerprint": "f1"}
    )
    lean = parse_webhook(raw, T0)
    assert lean is not None
    full = WebhookIn.model_validate_json(raw).alerts[0]
    [alert] = lean
    assert (alert.labels, alert.annotations, alert.starts_at) == (
        full.labels,
        full.annotations,
        full.starts_at,
    )
