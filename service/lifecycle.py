"""The runtime's start and stop steps around Kafka's client and its own tasks. A stop step that
fails is logged and the next one runs: a shutdown gives its leases back and closes the store
whatever Kafka does meanwhile."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from faststream.kafka import KafkaBroker

log = logging.getLogger(__name__)


async def start_client(broker: KafkaBroker) -> None:
    """``broker.start()``, with the subscribers started side by side: each one's start waits
    for its group's first assignment, which some brokers hold for seconds (Tansu: half the
    rebalance timeout), so one after another the start-up was the sum of the three groups."""
    await broker.connect()
    await asyncio.gather(*(sub.start() for sub in broker.subscribers))
    for pub in broker.publishers:
        await pub.start()
    broker.running = True


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# The least time the Kafka client gets to stop once the shutdown's own bound has passed.
CLIENT_STOP_SECONDS = 1.0


async def stop_client(broker: KafkaBroker, within: float) -> None:
    """``broker.stop()`` within ``within`` seconds, and its producer and admin client closed
    even when a consumer's stop failed: FastStream closes them only after every subscriber
    stopped cleanly. Past the bound the client is left as it is: what its producer had not
    sent is still in the outbox (a row goes once Kafka acknowledged it), sent by the next run."""
    try:
        async with asyncio.timeout(within):
            try:
                await broker.stop()
            except Exception:
                await broker.config.disconnect()
                raise
    except TimeoutError:
        raise TimeoutError(f"still stopping after {within:.1f} s (Kafka away?); left as it is") from None


async def quietly(what: str, step: Awaitable[object]) -> None:
    """One shutdown step; a failure is logged and the next step still runs. So is a
    CancelledError this task was not asked for: with Kafka away, aiokafka's consumer stop
    raises its fetcher's, and it ended the whole shutdown there, leases held and the store
    and the producer left open."""
    try:
        await step
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        log.warning("shutdown: cannot %s: cancelled from inside its client", what)
    except Exception as exc:
        log.warning("shutdown: cannot %s: %s: %s", what, exc.__class__.__name__, exc)
