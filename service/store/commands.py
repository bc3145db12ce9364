"""The ids of the commands applied: a repeat of one (a redelivered Kafka record, a client
retrying with the same Idempotency-Key) is recognised in the transaction that would apply
it, and changes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection

from service.store.database import Database
from service.store.tables import command_ids

# How long an id is remembered: far longer than any redelivery or client retry.
KEEP = timedelta(days=7)


class CommandIds:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def first_time(self, conn: AsyncConnection, command_id: str, now: datetime) -> bool:
        """Record ``command_id`` in ``conn``'s transaction; False if it was applied before."""
        result = await conn.execute(
            self._db.insert_ignore(command_ids).values(id=command_id, seen_at=now.timestamp())
        )
        # Commands are few: forgetting the old ids as they come keeps the table small.
        await conn.execute(delete(command_ids).where(command_ids.c.seen_at < (now - KEEP).timestamp()))
        return bool(result.rowcount == 1)
