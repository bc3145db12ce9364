"""Secrets every replica shares, kept in the store they already share.

A deployment configures nothing: the first replica to ask for a key makes it, and every
replica after reads the same one. Whoever can read the store can read them, as they can
read and change every incident.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select

from service.store.database import Database
from service.store.tables import service_keys

KEY_BYTES = 32


class Keys:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def shared(self, name: str) -> bytes:
        """The key called ``name``; made now if no replica made it yet."""
        made = {"name": name, "value": secrets.token_hex(KEY_BYTES)}
        query = select(service_keys.c.value).where(service_keys.c.name == name)
        async with self._db.write() as conn:
            # Replicas starting together: one insert wins, every one reads the winner's.
            await conn.execute(self._db.insert_ignore(service_keys), [made])
            value = (await conn.execute(query)).scalar_one()
        return bytes.fromhex(value)
