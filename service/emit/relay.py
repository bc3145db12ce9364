"""Publishes the outbox to Kafka: claim, unconfirmed sends, one flush, then delete.

At-least-once: a crash after the flush and before the delete publishes the same
records again, with the same CloudEvent ids. Rows are claimed with a lease, so with
several replicas each event is published by one of them.

On SQLite every transaction is an fsync, and a storm made two of them per batch of
events (a claim, then the delete). So every transaction that stores events takes the
relay along (:meth:`OutboxRelay.ride`, ``Store.ride_with``): it removes what was
published since and claims what can go next. What was published waits for such a
transaction, or ``REMOVE_WITHIN`` seconds at most, then goes in a transaction of the
relay's own that claims as well.

Pages before events: while the alert consumers work through a backlog (``service/backlog.py``)
the relay claims nothing, up to ``max_delay`` seconds; then everything waiting goes out, and
once the backlog ends. Only the order changes: every event is stored with its cause and
published, in order per incident.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import Clock, SystemClock
from service.observability.metrics import Metrics
from service.scheduling import DueWorker
from service.store.outbox import Outbox, OutboxClaim, OutboxRecord, SentClaim
from service.store.queue import LEASE_SECONDS

CE_HEADERS = {"content-type": "application/cloudevents+json; charset=utf-8"}
# Events claimed and sent at once. The claim runs in the event loop's thread on SQLite
# (Database.write_inline), and a storm's events carry their incidents' alerts: a claim of
# 1,000 held the loop up to 185 ms, its sends up to 98 ms; of 100, 27 and 17 ms.
CLAIM_AT_ONCE = 100
# The longest published rows wait for a ride before the relay removes them itself. They
# stay leased meanwhile: another replica's events of the same incident wait that long.
REMOVE_WITHIN = 0.1
# While events wait for a backlog, how often the relay looks whether it ended.
WAIT_POLL = 0.05


class OutboxRelay(DueWorker):
    name = "outbox relay"

    def __init__(
        self,
        outbox: Outbox,
        broker: KafkaBroker,
        metrics: Metrics,
        batch: int = CLAIM_AT_ONCE,
        clock: Clock | None = None,
    ) -> None:
        # Wall time even under the service's injected clock: leases are about this
        # machine's processes (``clock``: the tests' own).
        super().__init__(clock or SystemClock())
        self._outbox = outbox
        self._broker = broker
        self._metrics = metrics
        self._batch = batch
        self._lock = asyncio.Lock()
        self._inflight: set[asyncio.Future[None]] = set()
        # Claims sent and not yet removed, each with when it was sent (epoch), oldest first.
        self._published: list[tuple[SentClaim, float]] = []
        # Events rides claimed and the relay has yet to send: at most a claim's worth (a
        # storm's events carry their incidents' alerts; four claims' worth in hand grew the
        # storm's peak memory by 7-14 MiB). What a ride leaves goes with the next ride, or
        # with the relay's next removal.
        self._handed = 0
        # Woken for work (not only to plan a removal): start-up looks at once.
        self._wanted = True
        # The last ride may have left events no ride or removal will claim soon (it failed,
        # or claimed a whole batch): told of new events, the relay looks. No ride yet, the
        # same (on PostgreSQL nothing rides).
        self._behind = True
        self._backlog: Callable[[], bool] = lambda: False
        self._max_delay = 0.0
        # Since when events wait for the backlog (epoch); None while they do not.
        self._waiting_since: float | None = None

    def wait_for(self, backlog: Callable[[], bool], max_delay: float) -> None:
        """While ``backlog()`` says the alert consumers work through one, events wait, at
        most ``max_delay`` seconds (0: never)."""
        self._backlog, self._max_delay = backlog, max_delay

    def wake(self) -> None:
        self._wanted = True
        super().wake()

    async def run_once(self) -> int:
        if self._waits():
            return 0
        wanted, self._wanted = self._wanted, False
        if not wanted and self._published and self._clock.now().timestamp() < self._removal_due():
            return 0
        sent = await self.flush(remove=False)
        if self._waiting_since is not None:
            # They waited their longest: the next wait, if the backlog goes on, starts now.
            self._waiting_since = self._clock.now().timestamp()
        return sent

    def _waits(self) -> bool:
        """Do events wait for a backlog now? Not once they waited ``max_delay``."""
        if self._max_delay <= 0 or not self._backlog():
            self._waiting_since = None
            return False
        now = self._clock.now().timestamp()
        if self._waiting_since is None:
            self._waiting_since = now
        return now - self._waiting_since < self._max_delay

    async def next_due(self) -> float | None:
        if self._waiting_since is not None:
            # Waiting for the backlog: look again soon whether it ended.
            soon = self._clock.now().timestamp() + WAIT_POLL
            return min(soon, self._waiting_since + self._max_delay)
        if self._published:
            # The removal's transaction claims too.
            return self._removal_due()
        return await self._outbox.next_due(self._clock.now())

    def _removal_due(self) -> float:
        return self._published[0][1] + REMOVE_WITHIN

    async def flush(self, *, remove: bool = True) -> int:
        """Publish everything in the outbox this replica can claim; return how many
        records went out. ``remove``: what went out is removed before returning (else it
        may wait for a ride, :data:`REMOVE_WITHIN`)."""
        total = 0
        await self.drain()
        async with self._lock:
            while True:
                claim = await self._claim()
                if claim.records:
                    await self._send_tracked(claim)
                    total += len(claim.records)
                if len(claim.records) < self._batch:
                    break
            if remove and self._published:
                done = self._claims_published()
                await self._outbox.published(done)
                self._forget(done)
        return total

    async def drain(self) -> None:
        """Wait for the sends under way, those of the claims rides handed over included. A
        send cancelled with its worker (a stop) is finished first: its records are queued in
        the producer and go out anyway; given back, they would go out twice."""
        await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _claim(self) -> OutboxClaim:
        done = self._claims_published()
        claimed = await self._outbox.claim(self._clock.now(), self._batch, LEASE_SECONDS, published=done)
        self._forget(done)
        return claimed

    # -- riding the transactions that store events (Store.ride_with) -----------------------

    async def ride(self, conn: AsyncConnection) -> Callable[[bool], None]:
        """In ``conn``'s transaction: remove what was published, then claim what can go, as
        much as the events handed over before and not yet sent leave room for. The answer
        is told whether the transaction committed."""
        done = self._claims_published()
        waits = self._waits()
        room = 0 if waits else self._batch - self._handed
        claim = await self._outbox.claim_in(conn, self._clock.now(), room, LEASE_SECONDS, published=done)
        return lambda committed: self._settle(done, claim if committed else None, waits)

    def _settle(self, removed: tuple[SentClaim, ...], claim: OutboxClaim | None, waited: bool) -> None:
        """After a ride's transaction (``claim`` None: it failed, and nothing it did holds).
        Its claim is sent in turn with the relay's own. Events left waiting for a backlog
        are the relay's to claim once it ends."""
        self._behind = claim is None or waited or len(claim.records) == self._batch
        if claim is None:
            return
        self._forget(removed)
        if claim.records:
            self._handed += len(claim.records)
            self._track(asyncio.ensure_future(self._send_handed(claim)))

    def events_stored(self) -> None:
        """This process stored events: look for them, unless the rides take care of them."""
        if self._behind:
            self.wake()

    async def _send_handed(self, claim: OutboxClaim) -> None:
        try:
            async with self._lock:
                await self._send(claim)
        except Exception as exc:
            # Given back (Kafka away, say): the relay's own round retries, with its back-off.
            self._log.warning(
                "outbox relay: sending %d events failed (%s: %s)", len(claim.records), type(exc).__name__, exc
            )
            self.wake()
        finally:
            self._handed -= len(claim.records)

    # -- sending ------------------------------------------------------------------------------

    async def _send_tracked(self, claim: OutboxClaim) -> None:
        send = asyncio.ensure_future(self._send(claim))
        self._track(send)
        await asyncio.shield(send)

    def _track(self, send: asyncio.Future[None]) -> None:
        self._inflight.add(send)
        send.add_done_callback(self._inflight.discard)

    async def _send(self, claim: OutboxClaim) -> None:
        """Publish a claim; its rows are removed later (:meth:`_claim`, :meth:`ride`). On
        failure give them back at once, so another try (ours or a replica's) need not wait
        for the lease."""
        try:
            await self._publish([rec for _, rec in claim.records])
        except BaseException:
            await self._outbox.queue.release([row_id for row_id, _ in claim.records], claim.owner)
            raise
        self._metrics.events_published.inc(len(claim.records))
        self._published.append((claim.sent(), self._clock.now().timestamp()))
        if len(self._published) == 1:
            self.wake_by(self._removal_due())

    def _claims_published(self) -> tuple[SentClaim, ...]:
        return tuple(claim for claim, _ in self._published)

    def _forget(self, removed: tuple[SentClaim, ...]) -> None:
        gone = {id(c) for c in removed}
        self._published = [(c, at) for c, at in self._published if id(c) not in gone]

    async def _publish(self, records: list[OutboxRecord]) -> None:
        futures = [
            await self._broker.publish(rec.value, rec.topic, key=rec.key, headers=CE_HEADERS, no_confirm=True)
            for rec in records
        ]
        await asyncio.gather(*futures)
