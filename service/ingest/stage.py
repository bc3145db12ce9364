"""The parse stage: Kafka record values -> alerts; what cannot be parsed is dead-lettered."""

from __future__ import annotations

from datetime import UTC, datetime

from service.batch import Batch, DeadLetter
from service.ingest.parse import PayloadError, parse


class ParseStage:
    async def __call__(self, batch: Batch) -> Batch:
        for rec in batch.records:
            if not rec.value:
                batch.dead.append(DeadLetter(rec, "empty record value"))
                continue
            try:
                alerts = parse(rec.value, batch.now)
            except PayloadError as exc:
                batch.dead.append(DeadLetter(rec, exc.reason))
                continue
            if rec.timestamp_ms:
                # The producer's timestamp: for the HTTP path, when the webhook was accepted.
                received = datetime.fromtimestamp(rec.timestamp_ms / 1000, UTC)
                for alert in alerts:
                    alert.received_at = received
            batch.alerts.extend(alerts)
        return batch
