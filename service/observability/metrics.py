"""Prometheus metrics, one registry per service instance (tests run several)."""

from __future__ import annotations

import platform
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service import __version__

# Pager calls: most answer in well under a second; the slow tail is what a timeout cuts.
PAGER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# People's response: the runbook's response times run from minutes (SEV-1) to a day.
ACK_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)
RESOLVE_BUCKETS = (60, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800)


class EqualObservations(Histogram):
    """A histogram that takes ``times`` equal observations in one call: the alerts of a
    batch share their receipt time, and one ``observe`` per alert (a lock and a walk of the
    buckets each) cost a 100,000-alert storm 2% of its event loop. The exposition is the
    same as that many ``observe`` calls (tests/test_metrics.py)."""

    def observe_times(self, amount: float, times: int) -> None:
        self._raise_if_not_observable()  # type: ignore[no-untyped-call]
        self._sum.inc(amount * times)
        for i, bound in enumerate(self._upper_bounds):
            if amount <= bound:
                self._buckets[i].inc(times)
                break


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Read before each scrape is rendered (observability/scrape.py).
        self._on_scrape: list[Callable[[], Awaitable[None]]] = []
        r = self.registry
        # THE alert count: each alert once, when the batch it came in is stored, however it
        # reached the alerts topics (webhook, push, another producer, a heartbeat gone missing)
        # and whichever replica's webhook took it. The HTTP edge has its own counter below.
        self.alerts_received = Counter(
            "incidentd_alerts_received_total",
            "Alerts taken from the alerts topics and processed (stored), each counted once.",
            registry=r,
        )
        self.webhook_alerts_accepted = Counter(
            "incidentd_webhook_alerts_accepted_total",
            "Alerts this replica's HTTP endpoints acknowledged (Kafka had them), by source "
            "(http: the Alertmanager webhook, prometheus: POST /api/v2/alerts).",
            ["source"],
            registry=r,
        )
        self.webhook_refused = Counter(
            "incidentd_webhook_requests_refused_total",
            "Alert webhook requests answered with a non-2xx status (401, 400, 413, 422, 503...), by status.",
            ["status"],
            registry=r,
        )
        self.alerts_invalid = Counter(
            "incidentd_alerts_invalid_total",
            "Payloads rejected as malformed or invalid, by source and reason.",
            ["source", "reason"],
            registry=r,
        )
        self.alerts_deduplicated = Counter(
            "incidentd_alerts_deduplicated_total",
            "Alerts that changed nothing: re-deliveries, HA duplicates, late older states.",
            registry=r,
        )
        self.alerts_ignored = Counter(
            "incidentd_alerts_ignored_total",
            "Resolved alerts for which no firing alert was ever seen.",
            registry=r,
        )
        self.dead_letters = Counter(
            "incidentd_dead_letters_total",
            "Records written to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.incidents_open = Gauge(
            "incidentd_incidents_open",
            "Incidents currently open, by severity.",
            ["severity"],
            registry=r,
        )
        self.incidents_opened = Counter(
            "incidentd_incidents_opened_total",
            "Incidents opened, by severity.",
            ["severity"],
            registry=r,
        )
        self.pages_sent = Counter(
            "incidentd_pages_sent_total",
            "Pager calls that succeeded, by integration and action.",
            ["integration", "action"],
            registry=r,
        )
        self.pages_failed = Counter(
            "incidentd_pages_failed_total",
            "Pager calls that failed, by integration and whether they will be retried.",
            ["integration", "retrying"],
            registry=r,
        )
        self.page_failovers = Counter(
            "incidentd_page_failovers_total",
            "Trigger pages handed to a fallback pager after repeated failures, by pager and fallback.",
            ["integration", "fallback"],
            registry=r,
        )
        self.escalations = Counter(
            "incidentd_escalations_total",
            "Escalations fired, by kind (time, condition, sla, response_overdue).",
            ["kind"],
            registry=r,
        )
        self.escalations_unrouted = Counter(
            "incidentd_escalations_unrouted_total",
            "Roles paged through a pager that has no contact for them in contacts.yaml.",
            ["integration", "role"],
            registry=r,
        )
        self.reminders = Counter(
            "incidentd_reminders_total", "[UPDATE] follow-up messages sent (comms.update).", registry=r
        )
        self.remediations = Counter(
            "incidentd_remediations_total",
            "Remediation events, by action and outcome (planned, started, succeeded, failed, skipped).",
            ["action", "outcome"],
            registry=r,
        )
        self.remediations_skipped = Counter(
            "incidentd_remediation_skipped_total",
            "Remediations a guardrail stopped, by guardrail.",
            ["guardrail"],
            registry=r,
        )
        self.remediation_paused = Gauge(
            "incidentd_remediation_paused", "1 while the remediation kill switch is on.", registry=r
        )
        self.events_published = Counter(
            "incidentd_events_published_total", "Incident events published to Kafka.", registry=r
        )
        self.processing_latency = EqualObservations(
            "incidentd_processing_latency_seconds",
            "Time from an alert being received to its batch being stored.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch_size = Histogram(
            "incidentd_batch_records",
            "Kafka records per processed batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000),
            registry=r,
        )
        self._store_and_kafka(r)
        self._people_and_pagers(r)
        self.build_info = Gauge(
            "incidentd_build_info",
            "Always 1; the labels say which incidentd and Python this replica runs.",
            ["version", "python_version"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)

    def _store_and_kafka(self, r: CollectorRegistry) -> None:
        # Read at each scrape (observability/backlog.py); the store-wide ones are the same on
        # every replica: aggregate them with max(), not sum().
        self.consumer_lag = Gauge(
            "incidentd_kafka_consumer_lag_records",
            "Records in a partition this replica consumes not yet committed by its group "
            "(high-water mark less committed offset).",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "incidentd_outbox_pending_events",
            "Incident events stored and not yet published to Kafka (store-wide).",
            registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "incidentd_outbox_oldest_pending_age_seconds",
            "Age of the oldest event waiting to be published; 0 when none waits (store-wide).",
            registry=r,
        )
        self.pages_pending = Gauge(
            "incidentd_pages_pending",
            "Page jobs due and not yet sent (being sent or retrying; backup pages not yet due "
            "excluded; store-wide).",
            registry=r,
        )
        self.page_oldest_age = Gauge(
            "incidentd_page_oldest_pending_age_seconds",
            "How long the oldest pending page has been due; 0 when none is (store-wide).",
            registry=r,
        )

    def _people_and_pagers(self, r: CollectorRegistry) -> None:
        self.pager_duration = Histogram(
            "incidentd_pager_request_duration_seconds",
            "Pager calls (every request to every pager), by integration and outcome (sent, failed).",
            ["integration", "outcome"],
            buckets=PAGER_BUCKETS,
            registry=r,
        )
        # Observed once per opening, when the transaction that acknowledges or resolves it
        # commits (a re-delivered alert or repeated command changes nothing and observes nothing).
        self.time_to_acknowledge = Histogram(
            "incidentd_incident_time_to_acknowledge_seconds",
            "From an incident's opening (or reopening) to its first acknowledgement, by severity.",
            ["severity"],
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.time_to_resolve = Histogram(
            "incidentd_incident_time_to_resolve_seconds",
            "From an incident's opening (or reopening) to its resolution, by severity.",
            ["severity"],
            buckets=RESOLVE_BUCKETS,
            registry=r,
        )

    def on_scrape(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Await ``refresh`` before each scrape: gauges read from the store and from Kafka."""
        self._on_scrape.append(refresh)

    async def refresh(self) -> None:
        for refresh in self._on_scrape:
            await refresh()
