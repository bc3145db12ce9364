"""Bytes -> normalised :class:`Alert` objects, or a precise reason why not."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from service.correlate.fingerprint import fingerprint, valid_fingerprint
from service.ingest.payloads import AlertIn, WebhookIn
from service.models import Alert, AlertStatus

# Alertmanager writes "no end" as Go's zero time.
_GO_ZERO_YEAR = 1


class PayloadError(Exception):
    """A payload we will never be able to process; ``kind`` picks the HTTP status."""

    def __init__(self, kind: str, reason: str, details: list[dict[str, Any]] | None = None):
        super().__init__(reason)
        self.kind = kind  # "malformed" (400) or "invalid" (422)
        self.reason = reason
        self.details = details or []


def decode(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError("malformed", f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PayloadError("invalid", "expected a JSON object")
    return doc


def parse_document(doc: dict[str, Any], now: datetime) -> list[Alert]:
    """A webhook (has ``alerts``) or a single alert, validated and normalised."""
    try:
        if "alerts" in doc or "version" in doc:
            webhook = WebhookIn.model_validate(doc)
            return [normalise(a, now) for a in webhook.alerts]
        return [normalise(AlertIn.model_validate(doc), now)]
    except ValidationError as exc:
        details = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{d['loc'] or '(body)'}: {d['msg']}" for d in details[:5])
        raise PayloadError("invalid", f"payload does not validate: {summary}", details) from None


def parse(raw: bytes, now: datetime) -> list[Alert]:
    if b'"alerts"' in raw:
        # Hot path: pydantic parses and validates the JSON in one pass (half the cost
        # of json.loads + model_validate). Any failure takes the slow path below,
        # which gives the precise reason.
        try:
            return [normalise(a, now) for a in WebhookIn.model_validate_json(raw).alerts]
        except ValidationError:
            pass
    return parse_document(decode(raw), now)


def normalise(a: AlertIn, now: datetime) -> Alert:
    starts_at = _utc(a.starts_at) or now
    ends_at = _utc(a.ends_at)
    if a.status is not None:
        status = AlertStatus(a.status)
    else:
        # A single alert without status follows Alertmanager's own rule: ended means resolved.
        status = AlertStatus.RESOLVED if ends_at and ends_at <= now else AlertStatus.FIRING
    fp = a.fingerprint if valid_fingerprint(a.fingerprint) else fingerprint(a.labels)
    return Alert(
        fingerprint=fp,
        status=status,
        labels=a.labels,
        annotations=a.annotations,
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=a.generator_url,
        received_at=now,
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.year == _GO_ZERO_YEAR:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
