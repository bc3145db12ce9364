"""Creates the service's topics when they are missing (embedded mode, fresh clusters)."""

from __future__ import annotations

from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from service.config import Settings
from service.ingest.kafka_security import KafkaRefused, KafkaSecurity, kafka_security


async def ensure_topics(settings: Settings, security: KafkaSecurity | None = None) -> None:
    """Creates the missing topics (INCIDENTD_KAFKA_CREATE_TOPICS); with manual assignment,
    checks that each consumed topic has the partitions the consumers read."""
    security = security or kafka_security(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=10000, **security.client()
    )
    try:
        # Inside the try: a start cancelled half way (a signal) still closes the client.
        await admin.start()
        if settings.kafka_create_topics:
            await _create_missing(admin, settings)
        if settings.kafka_assignment == "manual":
            await _check_partitions(admin, settings)
    finally:
        await admin.close()


async def _create_missing(admin: AIOKafkaAdminClient, settings: Settings) -> None:
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
            response = await admin.create_topics([NewTopic(t, n, rf) for t in missing])
        except TopicAlreadyExistsError:
            return  # another replica created it between our list and create
        _check_created(response.topic_errors)


async def _check_partitions(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    """Manual assignment reads partitions 0..n-1 of each consumed topic: one partition more
    would never be read, one less would stall the start."""
    consumed = [settings.kafka_alerts_topic, *([settings.urgent_topic] if settings.urgent_topic else [])]
    consumed.append(settings.kafka_commands_topic)
    n = settings.kafka_topic_partitions
    for described in await admin.describe_topics(consumed):
        topic, count = str(described["topic"]), len(described["partitions"])
        if count != n:
            raise KafkaRefused(
                f"the topic {topic!r} has {count} partition(s); with INCIDENTD_KAFKA_ASSIGNMENT=manual "
                f"this process reads {n} (INCIDENTD_KAFKA_TOPIC_PARTITIONS): set it to {count}"
            )


# The broker answers per topic; aiokafka raises for none of them.
AUTHORIZATION = {TopicAuthorizationFailedError.errno, ClusterAuthorizationFailedError.errno}


def _check_created(answers: list[tuple[Any, ...]]) -> None:
    """A topic the broker would not create stops the start: without it the service would run
    and consume nothing. Already there (another replica was first) is fine."""
    for answer in answers:
        topic, code = str(answer[0]), int(answer[1])
        message = answer[2] if len(answer) > 2 else None  # CreateTopics v1+
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        error = for_code(code).__name__
        detail = f"{error}: {message}" if message else error
        hint = ""
        if code in AUTHORIZATION:
            hint = "; grant the user CREATE, or create the topics and set INCIDENTD_KAFKA_CREATE_TOPICS=false"
        raise KafkaRefused(f"Kafka would not create the topic {topic!r} ({detail}){hint}")
