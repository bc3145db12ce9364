"""The ``incidents.commands`` consumer: the incident commands (ack, resolve, assign,
status, note, update, declare, severity, escalate) and remediation approve/deny as
JSON records.

Low volume, so one record at a time; the offset is committed after the command
is stored (NACK_ON_ERROR), and a command that can never apply goes to the
dead-letter topic with the reason.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import ValidationError

from service.batch import DeadLetter, Record
from service.config import Settings
from service.errors import Conflict, Invalid, NotFound
from service.escalate.commands import CommandHandler, Declare, KafkaCommand, Origin, UnknownIncident
from service.ingest.consumer import group_timeouts, source
from service.ingest.deadletter import DeadLetterPublisher
from service.remediate.approval import Approvals, Approve, Deny

log = logging.getLogger(__name__)


def _command_id(cmd: KafkaCommand, record: Any) -> str:
    """The sender's id, else the record's coordinates (hashed: a topic name may be long)."""
    if cmd.command_id is not None:
        return f"kafka-id:{cmd.command_id}"
    where = f"{record.topic}:{record.partition}:{record.offset}:{record.timestamp}"
    return "kafka:" + hashlib.sha256(where.encode()).hexdigest()


async def _raw(msg: KafkaMessage) -> Any:
    return msg.raw_message


class CommandConsumer:
    def __init__(
        self,
        broker: KafkaBroker,
        handler: CommandHandler,
        settings: Settings,
        dead_letters: DeadLetterPublisher,
        approvals: Approvals,
    ) -> None:
        self._handler = handler
        self._approvals = approvals
        self._dead_letters = dead_letters
        topics, partitions = source(settings, settings.kafka_commands_topic)
        self.subscriber = broker.subscriber(
            *topics,
            partitions=partitions,
            # A group of its own: one rebalance never stalls both alerts and commands.
            group_id=f"{settings.kafka_group_id}.commands",
            **group_timeouts(settings),
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=_raw,
        )
        self.subscriber(self.handle)

    async def handle(self, body: Any) -> None:
        record = Record(body.value, body.topic, body.partition, body.offset, body.timestamp)
        try:
            cmd = KafkaCommand.model_validate_json(body.value or b"")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(body)"
            await self._dead_letters([DeadLetter(record, f"invalid command: {where}: {first['msg']}")])
            return
        if isinstance(cmd.command, Approve | Deny):
            try:
                await self._approvals.decide(cmd.command, cmd.incident_id)
            except (NotFound, Conflict) as exc:
                await self._dead_letters([DeadLetter(record, f"command refused: {exc}")])
            return
        try:
            if isinstance(cmd.command, Declare):
                # The record's incident_id names the new incident: a redelivery is a repeat.
                await self._handler.declare(cmd.command, "kafka", cmd.incident_id)
            else:
                # A record delivered again (a crash before the offset commit) is applied once.
                command_id = (
                    cmd.command_id or f"kafka:{body.topic}:{body.partition}:{body.offset}:{body.timestamp}"
                )
                await self._handler.apply(
                    cmd.incident_id, cmd.command, Origin("kafka", command_id=command_id)
                )
        except UnknownIncident:
            await self._dead_letters([DeadLetter(record, f"unknown incident {cmd.incident_id}")])
        except (Conflict, Invalid) as exc:
            await self._dead_letters([DeadLetter(record, f"command refused: {exc}")])
