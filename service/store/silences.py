"""Silences: Alertmanager's, kept in the database so every replica mutes the same alerts.

The rows are what Alertmanager's v2 API gives (matchers in its camelCase JSON shape), so a
silence posted by ``amtool`` reads back unchanged. The semantics are Alertmanager's: a
regex matcher is anchored at both ends and a label an alert lacks matches as "".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from service.clock import from_epoch
from service.ruleset.regex import Pattern, RegexError, compile_matcher_regex
from service.store.database import Database
from service.store.tables import silences

SilenceState = Literal["pending", "active", "expired"]
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SilenceMatcher:
    name: str
    value: str
    is_regex: bool
    is_equal: bool = True
    # A stored matcher whose regex RE2 refuses (saved by a version that compiled with
    # Python's re): it matches nothing, so its silence mutes nothing and every page goes out.
    inert: bool = field(default=False, compare=False, repr=False)
    # Compiled once here: a silence is checked against every alert of every batch.
    _regex: Pattern | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.is_regex and not self.inert:
            # Alertmanager's RE2 and anchoring; raises RegexError for what it would refuse.
            object.__setattr__(self, "_regex", compile_matcher_regex(self.value))

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.inert:
            return False
        actual = labels.get(self.name, "")
        if self._regex is not None:
            found = self._regex.fullmatch(actual)
        else:
            found = actual == self.value
        return found if self.is_equal else not found

    def matches_empty(self) -> bool:
        """Alertmanager refuses a silence whose every matcher matches the empty label (it
        would silence every alert); negative matchers never count as matching it."""
        return self.is_equal and self.matches({})

    @property
    def op(self) -> str:
        return ("=" if self.is_equal else "!") + ("~" if self.is_regex else ("" if self.is_equal else "="))

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value, ensure_ascii=False)}"

    def to_json(self) -> dict[str, str | bool]:
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SilenceMatcher:
        """Raises ``RegexError`` for a regex that does not compile."""
        return cls(
            name=str(doc["name"]),
            value=str(doc["value"]),
            is_regex=bool(doc.get("isRegex", False)),
            is_equal=bool(doc.get("isEqual", True)),
        )


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[SilenceMatcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    updated_at: datetime

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def state(self, now: datetime) -> SilenceState:
        if self.ends_at <= now:
            return "expired"
        if self.starts_at > now:
            return "pending"
        return "active"

    def describe(self) -> str:
        comment = json.dumps(self.comment, ensure_ascii=False)
        return f"silence {self.id[:8]}… by {self.created_by}: {comment}"


def _row(silence: Silence) -> dict[str, Any]:
    return {
        "id": silence.id,
        "matchers": json.dumps([m.to_json() for m in silence.matchers], ensure_ascii=False),
        "starts_at": silence.starts_at.timestamp(),
        "ends_at": silence.ends_at.timestamp(),
        "created_by": silence.created_by,
        "comment": silence.comment,
        "updated_at": silence.updated_at.timestamp(),
    }


def _stored_matcher(doc: Mapping[str, Any], silence_id: str) -> SilenceMatcher:
    try:
        return SilenceMatcher.from_json(doc)
    except RegexError as exc:
        log.warning("silence %s: regex %r is not RE2 (%s): it mutes nothing", silence_id, doc["value"], exc)
        return SilenceMatcher(str(doc["name"]), str(doc["value"]), True, bool(doc.get("isEqual", True)), True)


def _silence(row: Row[Any]) -> Silence:
    return Silence(
        id=row.id,
        matchers=tuple(_stored_matcher(m, row.id) for m in json.loads(row.matchers)),
        starts_at=from_epoch(row.starts_at),
        ends_at=from_epoch(row.ends_at),
        created_by=row.created_by,
        comment=row.comment,
        updated_at=from_epoch(row.updated_at),
    )


class Silences:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(self, silence: Silence) -> None:
        values = _row(silence)
        async with self._db.write() as conn:
            result = await conn.execute(update(silences).where(silences.c.id == silence.id).values(values))
            if result.rowcount == 0:
                await conn.execute(insert(silences).values(values))

    async def replace(self, previous_id: str, silence: Silence, now: datetime) -> None:
        """Expire ``previous_id`` (unless it has already) and add ``silence``, together: how
        Alertmanager changes a silence's matchers or its past, leaving the old one as history."""
        s = silences
        async with self._db.write() as conn:
            now_ts = now.timestamp()
            # A pending silence ends before it starts otherwise; Alertmanager sets both.
            await conn.execute(
                update(s)
                .where(s.c.id == previous_id, s.c.ends_at > now_ts, s.c.starts_at > now_ts)
                .values(starts_at=now_ts, ends_at=now_ts, updated_at=now_ts)
            )
            await conn.execute(
                update(s)
                .where(s.c.id == previous_id, s.c.ends_at > now_ts)
                .values(ends_at=now_ts, updated_at=now_ts)
            )
            await conn.execute(insert(s).values(_row(silence)))

    async def get(self, silence_id: str) -> Silence | None:
        row = await self._db.first(select(silences).where(silences.c.id == silence_id))
        return _silence(row) if row is not None else None

    async def list_all(self) -> list[Silence]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(silences).order_by(silences.c.ends_at))).all()
        return [_silence(r) for r in rows]

    async def expire(self, silence_id: str, now: datetime) -> Silence | None:
        """End the silence now (a pending one also starts now, so it never was active);
        one already expired stays as it is. None if there is no such silence."""
        s = silences
        async with self._db.write() as conn:
            row = (await conn.execute(select(s).where(s.c.id == silence_id))).first()
            if row is None:
                return None
            current = _silence(row)
            state = current.state(now)
            if state == "expired":
                return current
            now_ts = now.timestamp()
            values: dict[str, float] = {"ends_at": now_ts, "updated_at": now_ts}
            if state == "pending":
                values["starts_at"] = now_ts
            await conn.execute(update(s).where(s.c.id == silence_id).values(values))
        starts_at = now if state == "pending" else current.starts_at
        return Silence(current.id, current.matchers, starts_at, now, current.created_by, current.comment, now)

    async def active(self, now: datetime) -> list[Silence]:
        s = silences
        ts = now.timestamp()
        # A stable order: the hold names the first silence that matches, and must not flip
        # between two overlapping ones from one look to the next.
        query = select(s).where(s.c.starts_at <= ts, s.c.ends_at > ts).order_by(s.c.ends_at.desc(), s.c.id)

        async def active(conn: AsyncConnection) -> list[Silence]:
            return [_silence(r) for r in await conn.execute(query)]

        return await self._db.read_inline(active)

    async def next_change(self, now: datetime) -> datetime | None:
        """When the set of active silences changes next (one starts or ends), or None."""
        s = silences
        ts = now.timestamp()
        query = select(
            select(func.min(s.c.starts_at)).where(s.c.starts_at > ts).scalar_subquery(),
            select(func.min(s.c.ends_at)).where(s.c.ends_at > ts).scalar_subquery(),
        )
        row = await self._db.first(query)
        stamps = [v for v in (row or ()) if v is not None]
        return from_epoch(min(stamps)) if stamps else None
