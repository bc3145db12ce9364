"""The intake's work: a webhook (or a Prometheus push) in, one Kafka record per incident
group out, acknowledged.

A 2xx is given only for what Kafka has acknowledged (Alertmanager retries 5xx only);
every way a body can fail is an exception the HTTP layer turns into its status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from faststream.kafka import KafkaBroker

from service.clock import Clock
from service.ingest.parse import (
    PayloadError,
    decode,
    load_json,
    parse_document,
    parse_pushed,
    too_deep,
    validated_webhook,
)
from service.ingest.payloads import LeanAlertIn
from service.ingest.records import OutRecord, Routing, split_by_group
from service.ingest.seal import Seal
from service.models import Alert
from service.observability.metrics import Metrics

# Kafka's default record limit (1 MiB) less room for the record's own framing.
MAX_RECORD_BYTES = 1_000_000

# Sends records to the alerts topic (the urgent ones to the urgent topic) and returns once
# Kafka acknowledged all.
Publish = Callable[[list[OutRecord]], Awaitable[None]]


# The metrics' source label of each way in.
WEBHOOK_SOURCE = "http"
PUSH_SOURCE = "prometheus"


class TooLarge(Exception):
    pass


class Unavailable(Exception):
    """Kafka did not acknowledge in time: nothing can be promised, the sender retries."""


@dataclass(frozen=True, slots=True)
class Accepted:
    alerts: int
    records: int


class AlertIntake:
    def __init__(
        self,
        publish: Publish,
        routing: Routing,
        clock: Clock,
        metrics: Metrics,
        *,
        timeout: float,
    ) -> None:
        self._publish = publish
        self._routing = routing
        self._clock = clock
        self._metrics = metrics
        self._timeout = timeout

    async def accept(self, body: bytes) -> Accepted:
        """Raises :class:`PayloadError` (400/422), :class:`TooLarge` (413) or
        :class:`Unavailable` (503)."""
        now = self._clock.now()
        # The webhook refuses what nests too deep even in fields it does not use, as the
        # slow path does; a body that validates can only nest in such fields.
        # Routed by the labels alone: the alerts themselves are built by the consumer.
        hook = validated_webhook(body)
        if hook is not None and not (hook.may_nest() and too_deep(body)):
            return await self._publish_groups(None, _labels(hook.alerts), WEBHOOK_SOURCE, body)
        try:
            doc = decode(body)
            if "alerts" not in doc and "version" not in doc:
                raise PayloadError(
                    "invalid", "not an Alertmanager webhook: 'version' and 'alerts' are required"
                )
            alerts = parse_document(doc, now)
        except PayloadError as exc:
            self._metrics.alerts_invalid.labels(WEBHOOK_SOURCE, exc.kind).inc()
            raise
        return await self._publish_groups(doc, _labels(alerts), WEBHOOK_SOURCE, body)

    async def accept_pushed(self, body: bytes) -> Accepted:
        """``POST /api/v2/alerts`` (Alertmanager API v2, what Prometheus sends): a JSON array
        of alerts, each firing or resolved by its endsAt at receipt (``parse_pushed``).

        Raises as :meth:`accept` does. A body with some invalid alerts raises
        :class:`PayloadError` naming them only after the valid ones were acknowledged, as
        Alertmanager takes the valid alerts of a batch and answers 400 for the rest.
        """
        try:
            pushed = parse_pushed(load_json(body), self._clock.now())
        except PayloadError as exc:
            self._metrics.alerts_invalid.labels(PUSH_SOURCE, exc.kind).inc()
            raise
        accepted = await self._publish_groups(pushed.doc, _labels(pushed.alerts), PUSH_SOURCE)
        if pushed.refused is not None:
            self._metrics.alerts_invalid.labels(PUSH_SOURCE, pushed.refused.kind).inc()
            raise pushed.refused
        return accepted

    async def _publish_groups(
        self, doc: dict[str, Any] | None, labels: list[dict[str, str]], source: str, body: bytes | None = None
    ) -> Accepted:
        """``labels``: each alert's, in the order of ``doc``'s (or ``body``'s) alerts."""
        if not labels:
            return Accepted(0, 0)
        records = split_by_group(doc, labels, self._routing, body)
        if any(len(r.value) > MAX_RECORD_BYTES for r in records):
            self._metrics.alerts_invalid.labels(source, "too_large").inc()
            raise TooLarge(
                f"the alerts of one incident group exceed Kafka's record limit ({MAX_RECORD_BYTES} bytes)"
            )
        try:
            await asyncio.wait_for(self._publish(records), self._timeout)
        except Exception as exc:
            raise Unavailable(f"{exc.__class__.__name__}: {exc}") from exc
        # Counted by the HTTP endpoint (incidentd_webhook_alerts_accepted_total) and, once
        # processed, by the pipeline (incidentd_alerts_received_total): not here.
        return Accepted(len(labels), len(records))


def _labels(alerts: Sequence[Alert] | Sequence[LeanAlertIn]) -> list[dict[str, str]]:
    return [a.labels for a in alerts]


def kafka_publisher(broker: KafkaBroker, topic: str, urgent_topic: str, seal: Seal) -> Publish:
    """Unconfirmed sends of every record, then one wait for all acknowledgements.
    ``urgent_topic``: where the urgent records go (empty: the alerts topic too). Each record
    is sealed: the intake validated it (``seal.py``)."""

    async def publish(records: list[OutRecord]) -> None:
        futures = [
            await broker.publish(
                r.value,
                (urgent_topic or topic) if r.urgent else topic,
                key=r.key,
                headers=seal.headers(r.value),
                no_confirm=True,
            )
            for r in records
        ]
        await asyncio.gather(*futures)

    return publish
