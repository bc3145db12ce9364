"""Kafka records in and out of the ``alerts`` topic."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

from service.correlate.fingerprint import group_key
from service.ingest.parse import PayloadError
from service.models import Alert


def record_key(key: str) -> bytes:
    """Kafka key for an incident group: partitions by incident, stays short."""
    return hashlib.sha256(key.encode()).hexdigest()[:24].encode()


def split_by_group(
    doc: dict[str, Any], alerts: list[Alert], group_by: list[str]
) -> list[tuple[bytes, bytes]]:
    """One webhook record per incident group, so one consumer owns each incident."""
    if "alerts" not in doc:
        key, _ = group_key(alerts[0].labels, group_by)
        return [(record_key(key), _dump(doc))]
    groups: dict[str, list[Any]] = defaultdict(list)
    for raw_alert, alert in zip(doc["alerts"], alerts, strict=True):
        groups[group_key(alert.labels, group_by)[0]].append(raw_alert)
    return [
        (
            record_key(key),
            json.dumps({**doc, "alerts": items}, separators=(",", ":"), ensure_ascii=False).encode(),
        )
        for key, items in groups.items()
    ]


def _dump(doc: dict[str, Any]) -> bytes:
    # Not ASCII-escaped: escaping can double a body's size past Kafka's record limit.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def dead_letter_headers(reason: str, topic: str, partition: int, offset: int) -> dict[str, str]:
    """The DLQ record keeps the original value byte for byte (so it can be replayed
    into ``alerts`` as is); why and where it came from travel in headers."""
    return {
        "incidentd-dlq-reason": reason[:2000],
        "incidentd-dlq-topic": topic,
        "incidentd-dlq-partition": str(partition),
        "incidentd-dlq-offset": str(offset),
    }


__all__ = ["PayloadError", "dead_letter_headers", "record_key", "split_by_group"]
