"""Kafka records in and out of the ``alerts`` topic."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.correlate.fingerprint import group_key, group_keys
from service.ingest.parse import PayloadError
from service.jsonfast import dumps, loads


def record_key(key: str) -> bytes:
    """Kafka key for an incident group: partitions by incident, stays short."""
    return hashlib.sha256(key.encode()).hexdigest()[:24].encode()


@dataclass(frozen=True, slots=True)
class OutRecord:
    """A record for the alerts topic, or for the urgent one (``urgent``)."""

    key: bytes
    value: bytes
    urgent: bool = False


def no_lane(labels: dict[str, str]) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Routing:
    """Where an alert's record goes: its incident group (the key), and whether it takes the
    urgent lane (its severity says so: severities.yaml ``urgent``). Both come from its labels
    alone, so the webhook routes a body without building its alerts."""

    group_by: list[str]
    urgent: Callable[[dict[str, str]], bool] = no_lane


def split_by_group(
    doc: dict[str, Any] | None, labels: list[dict[str, str]], routing: Routing, body: bytes | None = None
) -> list[OutRecord]:
    """One record per incident group and lane, so one consumer owns each incident and an
    alert always takes the same lane (its severity comes from its labels). ``labels``: each
    alert's, in the order of ``doc``'s alerts.

    ``body``: ``doc``'s own bytes. Alertmanager sends one group per webhook, so most bodies
    go to Kafka as they came, without encoding them again. ``doc`` None: a webhook known only
    as ``body`` (validated), decoded here only if it must be split.
    """
    if doc is not None and "alerts" not in doc:
        key, _ = group_key(labels[0], routing.group_by)
        return [OutRecord(record_key(key), body or _dump(doc), routing.urgent(labels[0]))]
    lanes = list(zip(group_keys(labels, routing.group_by), map(routing.urgent, labels), strict=True))
    if body is not None and lanes.count(lanes[0]) == len(lanes):
        key, lane = lanes[0]
        return [OutRecord(record_key(key), body, lane)]
    if doc is None:
        assert body is not None
        doc = loads(body)
    groups: dict[tuple[str, bool], list[Any]] = defaultdict(list)
    for raw_alert, where in zip(doc["alerts"], lanes, strict=True):
        groups[where].append(raw_alert)
    return [
        OutRecord(record_key(key), _dump({**doc, "alerts": items}), lane)
        for (key, lane), items in groups.items()
    ]


def _dump(doc: dict[str, Any]) -> bytes:
    # Not ASCII-escaped: escaping can double a body's size past Kafka's record limit.
    return dumps(doc)


def dead_letter_headers(reason: str, topic: str, partition: int, offset: int) -> dict[str, str]:
    """The DLQ record keeps the original value byte for byte (so it can be replayed
    into ``alerts`` as is); why and where it came from travel in headers."""
    return {
        "incidentd-dlq-reason": reason[:2000],
        "incidentd-dlq-topic": topic,
        "incidentd-dlq-partition": str(partition),
        "incidentd-dlq-offset": str(offset),
    }


__all__ = [
    "OutRecord",
    "PayloadError",
    "Routing",
    "dead_letter_headers",
    "no_lane",
    "record_key",
    "split_by_group",
]
