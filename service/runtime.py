"""Builds every part of the service and runs it; the one place where parts are wired."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from faststream.kafka import KafkaBroker

from service.clock import Clock, SystemClock
from service.config import Settings
from service.emit.cloudevents import EventFactory
from service.emit.relay import OutboxRelay
from service.escalate.commands import CommandHandler
from service.escalate.scheduler import TimerWorker
from service.ingest.commands_consumer import CommandConsumer
from service.ingest.consumer import AlertConsumer
from service.ingest.deadletter import DeadLetterPublisher
from service.ingest.topics import ensure_topics
from service.notify.base import Notifier
from service.notify.registry import build_notifiers
from service.notify.worker import PageWorker
from service.observability.metrics import Metrics
from service.pipeline import build_pipeline
from service.remediate.approval import Approvals
from service.remediate.kube import configured as kube_configured
from service.remediate.kube import connect as connect_kube
from service.remediate.worker import RemediationWorker
from service.ruleset.models import RuleSet
from service.store.remediations import RemediationStore
from service.store.store import Store

log = logging.getLogger(__name__)


class Progress:
    """Counts Kafka records whose batch is stored (the offset commit follows); awaitable."""

    def __init__(self) -> None:
        self.records = 0
        self._changed = asyncio.Condition()

    async def add(self, n: int) -> None:
        async with self._changed:
            self.records += n
            self._changed.notify_all()

    async def wait_records(self, n: int, timeout: float = 30.0) -> None:
        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.records >= n)

        await asyncio.wait_for(_wait(), timeout)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        rules: RuleSet,
        clock: Clock | None = None,
        notifiers: dict[str, Notifier] | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.store = Store(settings.database_url)
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            # Group joins on some brokers take seconds; the HTTP path has its own deadline.
            request_timeout_ms=30000,
            # A 202 promises the alert survives a broker failure: wait for all in-sync replicas.
            acks="all",
            # Per-message INFO lines would cost more than the processing itself.
            log_level=logging.DEBUG,
            graceful_timeout=10.0,
        )
        self.events = EventFactory(
            settings.kafka_events_topic, settings.event_type_prefix, settings.event_source
        )
        self.notifiers = notifiers if notifiers is not None else build_notifiers(settings)
        self.relay = OutboxRelay(self.store, self.broker, self.metrics)
        self.pages = PageWorker(
            self.store,
            self.notifiers,
            rules,
            self.events,
            self.clock,
            self.metrics,
            settings,
            on_events=self.relay.wake,
        )
        self.timers = TimerWorker(
            self.store,
            rules,
            self.events,
            self.clock,
            self.metrics,
            {name: bool(getattr(n, "comms", False)) for name, n in self.notifiers.items()},
            on_effects=self._wake_all,
        )
        self.dead_letters = DeadLetterPublisher(self.broker, settings.kafka_dlq_topic, self.metrics)
        self.remediation_jobs = RemediationStore(self.store)
        self.remediation = RemediationWorker(
            self.store,
            self.remediation_jobs,
            rules,
            self.events,
            self.clock,
            self.metrics,
            settings,
            list(self.notifiers),
            on_effects=self._wake_all,
        )
        self.approvals = Approvals(self.remediation_jobs, self.clock, on_change=self.remediation.wake)
        self.pipeline = build_pipeline(
            rules,
            self.store,
            self.events,
            list(self.notifiers),
            self.dead_letters,
            self.metrics,
            # No API server, no remediation: planning actions that can only be skipped is noise.
            settings.remediation_mode if kube_configured(settings) else "off",
        )
        self._gauges = asyncio.Event()
        self.progress = Progress()
        self.commands = CommandHandler(
            self.store, self.events, self.clock, list(self.notifiers), on_change=self._wake_all
        )
        self.command_consumer = CommandConsumer(
            self.broker, self.commands, settings, self.dead_letters, self.approvals
        )
        self.consumer = AlertConsumer(
            self.broker,
            self.pipeline,
            settings,
            self.clock,
            self.metrics,
            self.dead_letters,
            after_batch=self._after_batch,
        )

    async def _after_batch(self, records: int) -> None:
        await self.progress.add(records)
        self._wake_all()

    def _wake_all(self) -> None:
        self.timers.wake()
        self.remediation.wake()
        self.relay.wake()
        self.pages.wake()
        self._gauges.set()

    async def refresh_gauges(self) -> None:
        counts = await self.store.open_counts()
        for name in self.rules.severities:
            self.metrics.incidents_open.labels(name).set(counts.get(name, 0))

    async def _gauge_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gauges.wait(), timeout=15)
            self._gauges.clear()
            try:
                await self.refresh_gauges()
            except Exception as exc:
                log.warning("cannot refresh incident gauges: %s", exc)
            await asyncio.sleep(1.0)  # at most one count query a second under load

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        await self.store.start()
        await self.remediation_jobs.start()
        self.remediation.kube = await connect_kube(self.settings)
        if self.remediation.kube is None and self.rules.remediation.policies:
            log.warning(
                "remediation is off: no Kubernetes API configured (INCIDENTD_KUBE_API_URL, in-cluster)"
            )
        if self.settings.kafka_create_topics:
            await ensure_topics(self.settings)
        await self.broker.start()
        tasks = [
            asyncio.create_task(self.relay.run(), name="outbox-relay"),
            asyncio.create_task(self.pages.run(), name="page-worker"),
            asyncio.create_task(self.timers.run(), name="timer-worker"),
            asyncio.create_task(self._gauge_loop(), name="gauges"),
        ]
        if self.remediation.kube is not None:
            # A replica without an API server leaves the jobs to one that has one.
            tasks.append(asyncio.create_task(self.remediation.run(), name="remediation-worker"))
        # Deliver what a previous run stored but did not get to publish or page.
        self._wake_all()
        try:
            yield self
        finally:
            self.consumer.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.pages.drain()
            await self.broker.stop()
            for notifier in self.notifiers.values():
                await notifier.aclose()
            if self.remediation.kube is not None:
                await self.remediation.kube.close()
            await self.store.close()
