"""INCIDENTD_KAFKA_REPLICATION_FACTOR (the chart's kafka.replicationFactor) reaches the topics
incidentd creates at start (INCIDENTD_KAFKA_CREATE_TOPICS), on the real embedded broker."""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient

from service.config import Settings
from service.ingest.topics import ensure_topics


async def test_created_topics_have_the_configured_replication_factor(kafka: str) -> None:
    prefix = f"rf-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka_bootstrap_servers=kafka,
        kafka_alerts_topic=f"{prefix}.alerts",
        kafka_events_topic=f"{prefix}.events",
        kafka_dlq_topic=f"{prefix}.dlq",
        kafka_commands_topic=f"{prefix}.commands",
        kafka_topic_partitions=2,
        kafka_replication_factor=3,
    )
    await ensure_topics(settings)
    topics = [
        settings.kafka_alerts_topic,
        settings.urgent_topic,
        settings.kafka_events_topic,
        settings.kafka_dlq_topic,
        settings.kafka_commands_topic,
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    assert sorted(t["topic"] for t in described) == sorted(topics)
    for topic in described:
        assert [len(p["replicas"]) for p in topic["partitions"]] == [3, 3], topic["topic"]
