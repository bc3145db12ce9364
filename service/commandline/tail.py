"""``incidentd tail``: a topic's records as they arrive, for people watching the service."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import typer

from service.commandline.exits import Exit, fail, fail_with, load_settings
from service.config import ConfigError


def tail(
    topic: str = typer.Argument("incidents.events"),
    from_beginning: bool = typer.Option(True, help="start at the oldest record"),
    bootstrap_servers: str = typer.Option(
        None, "--bootstrap-servers", help="host:port[,...] (default: INCIDENTD_KAFKA_BOOTSTRAP_SERVERS)"
    ),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", help="seconds to wait for a broker"),
) -> None:
    """Print a topic's records as they arrive (Ctrl-C to stop); exit 3 if no broker answers."""
    settings = load_settings()
    servers = bootstrap_servers or settings.kafka_bootstrap_servers

    from service.ingest.kafka_security import kafka_security, refused

    try:
        security = kafka_security(settings)
    except ConfigError as exc:
        raise fail(f"invalid configuration: {exc}") from None

    async def _tail() -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaConnectionError, KafkaError

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=servers,
            auto_offset_reset="earliest" if from_beginning else "latest",
            enable_auto_commit=False,
            **security.client(),
        )
        # aiokafka logs each refused connection; the one line below says it for all of them.
        kafka_log = logging.getLogger("aiokafka")
        level = kafka_log.level
        kafka_log.setLevel(logging.CRITICAL)
        try:
            # Bounded: aiokafka would otherwise wait on an address that drops packets.
            await asyncio.wait_for(consumer.start(), connect_timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            await consumer.stop()
            if isinstance(exc, TimeoutError):
                why = f"no Kafka broker answered at {servers} (nothing answered within {connect_timeout:g} s)"
            elif isinstance(exc, KafkaConnectionError):
                why = await refused(servers, security)  # refused, TLS or SASL: which one
            else:
                why = f"no Kafka broker answered at {servers} ({exc.__class__.__name__}: {exc})"
            raise fail_with(why, Exit.UNREACHABLE) from None
        finally:
            kafka_log.setLevel(level)
        try:
            async for rec in consumer:
                value = (rec.value or b"").decode(errors="replace")
                headers = {k: v.decode(errors="replace") for k, v in rec.headers}
                reason = headers.get("incidentd-dlq-reason")
                prefix = f"[{rec.partition}@{rec.offset}] " + (f"(dead letter: {reason}) " if reason else "")
                typer.echo(prefix + value)
        finally:
            await consumer.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail())
