"""CloudEvents 1.0, structured JSON mode, keyed by incident id."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from service.clock import iso
from service.emit.schema import DATASCHEMA_URI
from service.jsonfast import dumps
from service.store.outbox import OutboxRecord, TimelineEntry

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"

# Kafka's default record limit is 1 MiB; an event over it could never leave the
# outbox and would hold back every event behind it.
MAX_EVENT_BYTES = 900_000


class EventFactory:
    def __init__(self, topic: str, type_prefix: str, source: str) -> None:
        self.topic = topic
        self.prefix = type_prefix.rstrip(".")
        self.source = source

    def type_name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    def build(
        self, suffix: str, incident: dict[str, Any], extra: dict[str, Any], now: datetime
    ) -> OutboxRecord:
        # The id is fixed when the event is stored, so a re-publication after a
        # crash carries the same id and consumers can drop the duplicate.
        event = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": self.source,
            "type": self.type_name(suffix),
            "subject": incident["id"],
            "time": iso(now),
            "datacontenttype": "application/json",
            # Names the contract's major version, so a consumer can pick its validator (or
            # refuse a major it does not know) before it reads `data`.
            "dataschema": DATASCHEMA_URI,
            "data": {**incident, **extra},
        }
        value = _encode(event)
        if len(value) > MAX_EVENT_BYTES and extra.get("alerts"):
            # The incident snapshot is the contract; the alert details can be dropped.
            event["data"] = {**incident, **extra, "alerts": [], "alerts_omitted": len(extra["alerts"])}
            value = _encode(event)
        entry = TimelineEntry(incident["id"], suffix, summarise(suffix, incident, extra))
        return OutboxRecord(self.topic, incident["id"].encode(), value, entry)


def _encode(event: dict[str, Any]) -> bytes:
    return dumps(event)


def summarise(suffix: str, incident: dict[str, Any], extra: dict[str, Any]) -> str:
    """One line for the incident's timeline."""
    parts = [f"{incident['severity']} {incident['status']}"]
    if alerts := extra.get("alerts"):
        parts.append(
            f"{len(alerts)} alert(s): " + ", ".join(sorted({str(a.get("status", "?")) for a in alerts}))
        )
    if reasons := extra.get("reasons"):
        parts.append("; ".join(reasons))
    if page := extra.get("page"):
        outcome = f"{page['integration']} {page['action']} attempt {page['attempt']}"
        parts.append(outcome + (f": {page['error']}" if page.get("error") else ""))
    if command := extra.get("command"):
        parts.append(f"{command['command']} by {command['by']} via {command['source']}" + _said(command))
    if escalation := extra.get("escalation"):
        parts.append(
            f"{escalation['kind']} escalation to {', '.join(escalation['roles'])}: {escalation['reason']}"
        )
    if hold := extra.get("suppression"):
        lifted = " ended" if suffix.endswith("unsuppressed") else ""
        parts.append(f"{hold['kind']}{lifted}: {hold['reason']}")
    if triage := extra.get("triage"):
        parts.append("; ".join(line.lstrip("- ") for line in str(triage["summary"]).splitlines()))
    if remediation := extra.get("remediation"):
        parts.append(_remediation(remediation))
    return " | ".join(parts)


def _remediation(part: dict[str, Any]) -> str:
    """The remediation audit line: action, target and mode, and why it stopped or failed."""
    target = part.get("target") or {}
    if target.get("kind") == "node":
        where = f"node/{target.get('name')}"
    elif target:
        where = f"deployment/{target.get('namespace')}/{target.get('name')}"
    else:
        where = "(no target)"
    line = f"{part.get('action')} {where} ({part.get('mode')})"
    failure = part.get("failure") or {}
    if part.get("guardrail"):
        line += f", {part['guardrail']}: {part.get('reason') or ''}".rstrip(": ")
    elif failure.get("reason"):
        line += f", failed at {failure.get('stage')}: {failure['reason']}"
    elif part.get("reason"):
        line += f": {part['reason']}"
    return line


def _said(command: dict[str, Any]) -> str:
    """What the person wrote or set, for the timeline line."""
    keys = ("note", "text", "root_cause", "eta", "reason", "item", "url")
    said = [str(command[k]) for k in keys if command.get(k)]
    if command.get("role"):
        said.insert(0, f"{command['role']}: {command.get('who')}")
    return (": " + "; ".join(said)) if said else ""
