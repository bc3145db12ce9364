"""The parse stage: Kafka record values -> alerts; what cannot be parsed is dead-lettered."""

from __future__ import annotations

from datetime import UTC, datetime

from service.batch import Batch, DeadLetter, Record
from service.ingest.parse import PayloadError, parse, read_sealed
from service.ingest.seal import Seal
from service.models import Alert


class ParseStage:
    def __init__(self, seal: Seal | None = None) -> None:
        self._seal = seal or Seal()

    async def __call__(self, batch: Batch) -> Batch:
        for rec in batch.records:
            if not rec.value:
                batch.dead.append(DeadLetter(rec, "empty record value"))
                continue
            try:
                alerts = self._read(rec, rec.value, batch.now)
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

    def _read(self, rec: Record, value: bytes, now: datetime) -> list[Alert]:
        if self._seal.holds(value, rec.seal):
            try:
                return read_sealed(value, now)
            except (ValueError, TypeError, KeyError):
                # Sealed by a release that wrote something else: validated below.
                pass
        return parse(value, now)
