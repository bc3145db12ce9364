"""Prometheus metrics, one registry per service instance (tests run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.alerts_received = Counter(
            "incidentd_alerts_received_total",
            "Alerts accepted for processing, by source (http, kafka).",
            ["source"],
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
        self.processing_latency = Histogram(
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
