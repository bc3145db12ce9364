"""INCIDENTD_KAFKA_ASSIGNMENT=manual (what `run --embedded` uses): one process reads every
partition with no consumer group join, commits its offsets under the group ids, and starts
again where it stopped; a topic with other partitions than it reads stops the start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from service.ingest.kafka_security import KafkaRefused
from service.ingest.topics import ensure_topics
from service.ruleset import load_rules
from service.runtime import Runtime
from tests.support.payloads import alert, webhook
from tests.support.service import RunningService, run_service, test_settings


async def _committed(bootstrap: str, group: str, topic: str) -> int:
    """The offsets ``group`` committed on ``topic``, summed (a record each here)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(3)])
    finally:
        await consumer.stop()


async def _members(bootstrap: str, group: str) -> list[object]:
    """The members of ``group`` the broker knows (DescribeGroups)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    [(error, name, _state, _protocol_type, _protocol, members, *_)] = response.groups
    assert (error, name) == (0, group)
    return list(members)


def _received(svc: RunningService) -> float:
    value = svc.runtime.metrics.registry.get_sample_value("incidentd_alerts_received_total")
    return value or 0.0


async def _open(svc: RunningService, name: str) -> None:
    resp = await svc.post_webhook(json.dumps(webhook(alert(name, severity="warning"))).encode())
    assert resp.status_code == 202
    await svc.events.wait_for(
        lambda _: any(
            e["data"]["group_labels"].get("alertname") == name for e in svc.events.of_type("incident.opened")
        )
    )


async def test_one_process_reads_every_partition_without_joining_and_resumes_where_it_stopped(
    kafka: str, tmp_path: Path
) -> None:
    settings = test_settings(kafka, tmp_path, kafka_assignment="manual")
    topic = settings.kafka_alerts_topic
    async with run_service(settings) as svc:
        consumer = svc.runtime.consumer.subscriber.consumer
        assert consumer is not None
        every = {TopicPartition(topic, p) for p in range(3)}
        assert consumer.assignment() == every
        await _open(svc, "ManualFirst")
        assert _received(svc) == 1
        # Assigned, not subscribed: the service is no member of its groups (no join to wait for).
        for group in (settings.kafka_group_id, f"{settings.kafka_group_id}.urgent"):
            assert await _members(kafka, group) == []
    assert await _committed(kafka, settings.kafka_group_id, topic) == 1

    async with run_service(settings) as svc:
        await _open(svc, "ManualSecond")
        # The first alert's record was not read again: this run stored one alert.
        assert _received(svc) == 1
    assert await _committed(kafka, settings.kafka_group_id, topic) == 2


async def test_a_topic_with_other_partitions_than_it_reads_stops_the_start(
    kafka: str, tmp_path: Path
) -> None:
    made = test_settings(kafka, tmp_path)
    await ensure_topics(made)  # 3 partitions each
    settings = made.model_copy(update={"kafka_assignment": "manual", "kafka_topic_partitions": 2})
    runtime = await Runtime.create(settings, load_rules(settings.rules_dir))
    expected = (
        f"the topic '{settings.kafka_alerts_topic}' has 3 partition(s); with INCIDENTD_KAFKA_ASSIGNMENT=manual "
        "this process reads 2 (INCIDENTD_KAFKA_TOPIC_PARTITIONS): set it to 3"
    )
    with pytest.raises(KafkaRefused) as refused:
        async with runtime.running():
            pass
    assert str(refused.value) == expected
