"""Creates the service's topics when they are missing (embedded mode, fresh clusters)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from service.config import Settings
from service.ingest.kafka_security import KafkaSecurity, kafka_security


async def ensure_topics(settings: Settings, security: KafkaSecurity | None = None) -> None:
    security = security or kafka_security(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=10000, **security.client()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            settings.kafka_alerts_topic,
            *([settings.urgent_topic] if settings.urgent_topic else []),
            settings.kafka_events_topic,
            settings.kafka_dlq_topic,
            settings.kafka_commands_topic,
        ]
        missing = [t for t in wanted if t not in existing]
        if missing:
            n, rf = settings.kafka_topic_partitions, settings.kafka_replication_factor
            try:
                await admin.create_topics([NewTopic(t, n, rf) for t in missing])
            except TopicAlreadyExistsError:
                pass  # another replica created it between our list and create
    finally:
        await admin.close()
