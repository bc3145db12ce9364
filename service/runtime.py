"""Builds every part of the service and runs it; the one place where parts are wired."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

from faststream.kafka import KafkaBroker
from pydantic import SecretStr

from service.allocator import HeapTrimmer
from service.backlog import AlertBacklog
from service.batch import Pipeline, Stored
from service.classify.lane import urgent_lane
from service.clock import Clock, SystemClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.emit.relay import OutboxRelay
from service.escalate.commands import CommandHandler
from service.escalate.scheduler import TimerWorker
from service.http.app import HttpServices, HttpSettings
from service.http.inbound import Inbound, InboundSecrets
from service.http.silences import SilenceService
from service.ingest.commands_consumer import CommandConsumer
from service.ingest.consumer import AlertConsumer, UrgentAlertConsumer
from service.ingest.deadletter import DeadLetterPublisher
from service.ingest.intake import AlertIntake, kafka_publisher
from service.ingest.kafka_security import explained, kafka_security
from service.ingest.records import Routing, no_lane
from service.ingest.seal import KEY_NAME, Seal
from service.ingest.topics import ensure_topics
from service.lifecycle import CLIENT_STOP_SECONDS, cancel_all, quietly, start_client, stop_client
from service.notify.base import Notifier
from service.notify.registry import build_fallbacks, build_notifiers
from service.notify.worker import PageWorker
from service.observability.gauges import OpenIncidentGauges
from service.observability.metrics import Metrics
from service.observability.readiness import Readiness
from service.observability.response_times import ResponseTimes
from service.observability.scrape import ConsumerGroup, ScrapeGauges
from service.pipeline import Paging, build_lift_pipeline, build_pipeline
from service.quiet.worker import NoiseWorker
from service.remediate.approval import Approvals
from service.remediate.control import RemediationControl
from service.remediate.kube import Kube
from service.remediate.kube import connect as connect_kube
from service.remediate.worker import RemediationWorker
from service.ruleset.models import RuleSet
from service.scheduling import DueWorker
from service.store.leases import LeaseKeeper
from service.store.listener import WorkListener
from service.store.store import INCIDENTS, Store
from service.store.tables import outbox as outbox_table
from service.store.tables import timers as timers_table
from service.store.views import IncidentViews
from service.triage.probes.registry import build_probes
from service.triage.worker import TriageWorker

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
        kube: Kube | None = None,
    ) -> None:
        """``kube``: the Kubernetes API client; without one there is no remediation
        (:meth:`create` connects the one the settings name)."""
        self.settings = settings
        self.rules = rules
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.store = Store(settings.database_url)
        self.kafka_security = kafka_security(settings)
        self.store.on_commit(ResponseTimes(self.metrics))
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            security=self.kafka_security.faststream(),
            # Group joins on some brokers take seconds; the HTTP path has its own deadline.
            request_timeout_ms=30000,
            # A 202 promises the alert survives a broker failure: wait for all in-sync replicas.
            acks="all",
            # Per-message INFO lines would cost more than the processing itself.
            log_level=logging.DEBUG,
            # Our logger, not FastStream's own stdout handler (always coloured): one format.
            logger=logging.getLogger("faststream.kafka"),
            graceful_timeout=10.0,
        )
        self.events = EventFactory(
            settings.kafka_events_topic, settings.event_type_prefix, settings.event_source
        )
        self.notifiers = notifiers if notifiers is not None else build_notifiers(settings)
        # Pagers used only when another keeps failing (contacts.yaml `fallback`).
        self.fallbacks = build_fallbacks(settings, rules.contacts, self.notifiers)
        self.kube = kube
        pagers = list(self.notifiers)
        ctx = Context(
            self.store,
            rules,
            self.events,
            self.clock,
            self.metrics,
            settings,
            self._wake_all,
            self.wake_noise,
        )
        # Wall time, as the relay's leases: a backlog is about this process's consumers.
        self.backlog = AlertBacklog(SystemClock())
        self.relay = OutboxRelay(self.store.outbox, self.broker, self.metrics)
        self.relay.wait_for(self.backlog.active, settings.events_max_delay_seconds)
        # On SQLite the relay claims the events in the transactions that store them: see
        # Store.ride_with for why not on PostgreSQL.
        self.store.ride_with(self.relay.ride)
        # A page's outcome is an event to publish, nothing more.
        self.pages = PageWorker(
            dataclasses.replace(ctx, on_effects=self.relay.events_stored), self.notifiers, self.fallbacks
        )
        comms = [name for name, n in self.notifiers.items() if n.comms]
        self.timers = TimerWorker(ctx, pagers, comms)
        # Triage probes run apart from the timer worker: a hanging probe delays no escalation.
        self.triage = TriageWorker(ctx, comms, build_probes(kube))
        self.remediation = RemediationWorker(ctx, pagers, kube)
        self.gauges = OpenIncidentGauges(
            self.store.incidents, self.metrics, list(rules.severities), self.clock
        )
        # The relay leases by wall time; the other queues by the clock their workers use.
        leased = [(self.store.pages.queue, self.clock), (self.store.timers.queue, self.clock)]
        leased += [(self.store.remediations.queue, self.clock), (self.store.outbox.queue, SystemClock())]
        self.leases = LeaseKeeper(leased, self.clock)
        self.listener = WorkListener(settings.database_url, self._heard) if self.store.db.postgres else None
        self.dead_letters = DeadLetterPublisher(self.broker, settings.kafka_dlq_topic, self.metrics)
        # No API server, no remediation: planning actions that can only be skipped is noise.
        remediation_mode = settings.remediation_mode if kube is not None else "off"
        # Keyed at start, once the store is open: records are written only after that.
        self.seal = Seal()
        self.intake = AlertIntake(
            kafka_publisher(self.broker, settings.kafka_alerts_topic, settings.urgent_topic, self.seal),
            Routing(rules.grouping.group_by, urgent_lane(rules) if settings.urgent_topic else no_lane),
            self.clock,
            self.metrics,
            timeout=settings.kafka_publish_timeout_seconds,
        )
        paging = Paging(pagers, list(self.fallbacks), handoff=self.pages)
        self.noise = NoiseWorker(ctx, build_lift_pipeline(ctx, paging, remediation_mode), self.intake.accept)
        self.pipeline: Pipeline = build_pipeline(ctx, paging, self.dead_letters, remediation_mode, self.seal)
        self.progress = Progress()
        self.heap = HeapTrimmer()
        # Acks and closes also reach the fallback pagers, in case a page went out through them.
        self.commands = CommandHandler(ctx, [*pagers, *self.fallbacks], comms)
        self.approvals = Approvals(self.store, self.clock, on_change=self.remediation.wake)
        self.remediation_control = RemediationControl(
            ctx, cluster=kube is not None, wake=self.remediation.wake
        )
        self.command_consumer = CommandConsumer(
            self.broker, self.commands, settings, self.dead_letters, self.approvals
        )
        self.consumer = AlertConsumer(
            self.broker, self.pipeline, ctx, self.dead_letters, after_batch=self._after_batch
        )
        # The urgent lane shares the pipeline: its slices interleave with the other lane's,
        # and the store's optimistic versions settle an incident both touch at once.
        self.consumers = [self.consumer]
        if settings.urgent_topic:
            urgent = UrgentAlertConsumer(
                self.broker, self.pipeline, ctx, self.dead_letters, self._after_batch
            )
            self.consumer.yield_to(urgent)
            self.consumers.append(urgent)
        for c in self.consumers:
            c.report_to(self.backlog)
        groups = [ConsumerGroup(c.subscription(settings)[1], c.subscriber) for c in self.consumers]
        groups.append(ConsumerGroup(f"{settings.kafka_group_id}.commands", self.command_consumer.subscriber))
        self.metrics.on_scrape(ScrapeGauges(self.store, self.metrics, self.clock, groups).refresh)

    @classmethod
    async def create(
        cls,
        settings: Settings,
        rules: RuleSet,
        clock: Clock | None = None,
        notifiers: dict[str, Notifier] | None = None,
    ) -> Runtime:
        """A runtime with the Kubernetes API client the settings name, if any."""
        kube = await connect_kube(settings)
        if kube is None and rules.remediation.policies:
            log.warning(
                "remediation is off: no Kubernetes API configured (INCIDENTD_KUBE_API_URL, in-cluster)"
            )
        return cls(settings, rules, clock, notifiers, kube)

    def http_services(self) -> HttpServices:
        readiness = Readiness({"store": self._store_ok, "kafka": self._kafka_ok})
        return HttpServices(
            intake=self.intake,
            incidents=IncidentViews(self.store, self.clock),
            commands=self.commands,
            remediation=self.remediation_control,
            approvals=self.approvals,
            readiness=readiness,
            metrics=self.metrics,
            severities=list(self.rules.severities),
            inbound=Inbound(self.store, self.commands, self.clock, _inbound_secrets(self.settings)),
            silences=SilenceService(self.store.silences, self.clock, on_change=self.wake_noise),
        )

    def wake_noise(self) -> None:
        self.noise.wake()

    def http_settings(self) -> HttpSettings:
        s = self.settings
        token = s.webhook_token.get_secret_value().encode() if s.webhook_token else None
        return HttpSettings(token, frozenset(s.http_public_paths), s.http_max_body_bytes)

    async def _store_ok(self) -> bool:
        await self.store.ping()
        return True

    async def _kafka_ok(self) -> bool:
        return bool(await self.broker.ping(timeout=2.0))

    async def _after_batch(self, records: int, stored: Stored | None) -> None:
        await self._wake_after(records, stored)
        # Queued behind the wake-ups just made, not run inline: a trim takes up to a ms.
        asyncio.get_running_loop().call_soon(self.heap.after_work)

    async def _wake_after(self, records: int, stored: Stored | None) -> None:
        await self.progress.add(records)
        if stored is None:
            self._heard(None)  # unknown (a failed batch): everyone looks
            self.gauges.wake()
            return
        # Only the workers with new work: a storm of repeats stores nothing and wakes nobody,
        # and each wake-up costs the store a claim and a next-due query; the timer workers
        # only if a new timer is due before they would look anyway.
        queues = set(stored.queues)
        if outbox_table.name in queues:
            queues.discard(outbox_table.name)
            self.relay.events_stored()
        if timers_table.name in queues and stored.timers_due is not None:
            queues.discard(timers_table.name)
            self.timers.wake_by(stored.timers_due)
            self.triage.wake_by(stored.timers_due)
        self._heard(queues)
        if INCIDENTS in stored.queues:
            self.gauges.wake()

    def _wake_all(self) -> None:
        self.timers.wake()
        self.triage.wake()
        self.remediation.wake()
        self.relay.wake()
        self.pages.wake()
        self.gauges.wake()

    def _heard(self, queues: set[str] | None) -> None:
        """Another replica (or this one) stored or gave back work in ``queues``."""
        workers = {
            "outbox": self.relay,
            "page_jobs": self.pages,
            "timers": self.timers,
            "remediations": self.remediation,
        }
        for name, worker in workers.items():
            if queues is None or name in queues:
                worker.wake()
        if queues is None or "timers" in queues:
            self.triage.wake()  # the triage timers are rows of the timers queue too

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """:meth:`running` as an ASGI app's lifespan."""
        async with self.running():
            yield

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        await self.store.start(migrate=self.settings.database_migrate)
        self.seal.use(await self.store.keys.shared(KEY_NAME))
        try:
            async with explained(self.settings, self.kafka_security):
                if self.settings.kafka_create_topics or self.settings.kafka_assignment == "manual":
                    await ensure_topics(self.settings, self.kafka_security)
                await start_client(self.broker)
            if self.settings.kafka_assignment == "manual":
                topics = [c.subscription(self.settings)[0] for c in self.consumers]
                log.info(
                    "reading partitions 0-%d of %s without a consumer group join "
                    "(INCIDENTD_KAFKA_ASSIGNMENT=manual)",
                    self.settings.kafka_topic_partitions - 1,
                    ", ".join([*topics, self.settings.kafka_commands_topic]),
                )
        except BaseException:
            # A signal or a failure while the consumers join their groups: stop the clients
            # already made, or they outlive the start (and the embedded broker), retrying
            # fetches until the process exits and reports them unclosed.
            stopping = stop_client(self.broker, self.settings.shutdown_timeout_seconds)
            await quietly("stop the Kafka client", stopping)
            await self.store.close()
            raise
        workers: list[DueWorker] = [self.relay, self.pages, self.timers, self.triage, self.gauges, self.noise]
        if self.kube is not None:
            # A replica without an API server leaves the jobs to one that has one.
            workers.append(self.remediation)
        tasks = [asyncio.create_task(w.run(), name=w.name) for w in workers]
        if self.listener is not None:
            tasks.append(asyncio.create_task(self.listener.run(), name="work listener"))
        # Renews the leases of the work in hand, until the very end of a shutdown.
        keeper = asyncio.create_task(self.leases.run(), name=self.leases.name)
        # Deliver what a previous run stored but did not get to publish or page.
        self._wake_all()
        try:
            yield self
        finally:
            await self._stop(tasks, keeper)

    async def _stop(self, tasks: list[asyncio.Task[None]], keeper: asyncio.Task[None]) -> None:
        """Stop consuming (the batch in hand is stored and committed), stop the workers,
        let the pages being sent finish, publish what is stored, give back every lease,
        then close; bounded by ``INCIDENTD_SHUTDOWN_TIMEOUT_SECONDS``."""
        for consumer in self.consumers:
            consumer.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_timeout_seconds
        try:
            async with asyncio.timeout_at(deadline):
                for consumer in self.consumers:
                    await quietly(f"stop consuming {consumer.lane}", consumer.subscriber.stop())
                await quietly("stop consuming commands", self.command_consumer.subscriber.stop())
                await cancel_all(tasks)
                await self.pages.drain()
                await quietly("publish the outbox", self.relay.flush())
        except TimeoutError:
            log.warning(
                "shutdown took over %ss; stopping what is left", self.settings.shutdown_timeout_seconds
            )
        await cancel_all(tasks)
        await self.pages.cancel()
        await cancel_all([keeper])
        await quietly("give back leases", self.leases.release_all())
        # What is left of the bound, a second at least: with Kafka away, the producer would
        # wait out its request timeout (40 s) for records the outbox still holds anyway.
        within = max(deadline - loop.time(), CLIENT_STOP_SECONDS)
        await quietly("stop the Kafka client", stop_client(self.broker, within))
        for notifier in [*self.notifiers.values(), *self.fallbacks.values()]:
            await quietly(f"close the {notifier.name} pager", notifier.aclose())
        if self.kube is not None:
            await quietly("close the Kubernetes client", self.kube.close())
        await self.store.close()


def _inbound_secrets(s: Settings) -> InboundSecrets:
    def raw(secret: SecretStr | None) -> bytes | None:
        return secret.get_secret_value().encode() if secret is not None else None

    return InboundSecrets(
        raw(s.slack_signing_secret), raw(s.pagerduty_webhook_secret), raw(s.opsgenie_webhook_secret)
    )
