"""Alertmanager's v2 silences API, so ``amtool silence add|query|expire`` works against us.

The shapes, the status codes and the update rules are Alertmanager's (``api/v2/api.go``,
``silence/silence.go``): a body that is not JSON is a 400, one that does not fit the schema
a 422 (as its go-swagger server answers), a silence Alertmanager would refuse a 400, an id
it does not know a 404; every error body is a plain JSON string, which is what amtool's
client reads and prints. The messages say exactly what is wrong.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.clock import Clock, iso
from service.http.bodies import MAX_COMMAND_BYTES, BodyTooLarge, read_limited
from service.ingest.parse import PayloadError, find_text, load_json
from service.ruleset.matchers import Matcher
from service.ruleset.regex import RegexError
from service.store.silences import Silence, SilenceMatcher, Silences, SilenceState


class SilenceError(Exception):
    """A refusal, with the status Alertmanager would answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class MatcherBody(BaseModel):
    name: str
    value: str
    # The API's camelCase names, so a body validates as it comes.
    isRegex: bool
    isEqual: bool = True


class PostableSilence(BaseModel):
    """Alertmanager's postableSilence; unknown fields (``annotations``) are ignored, as it does."""

    id: str | None = None
    matchers: list[MatcherBody]
    startsAt: AwareDatetime
    endsAt: AwareDatetime
    createdBy: str
    comment: str


_STATE_ORDER: dict[SilenceState, int] = {"active": 0, "pending": 1, "expired": 2}


def sort_key(silence: Silence, now: datetime) -> tuple[int, float]:
    """Alertmanager's order: active ones ending soonest, pending ones starting soonest,
    then expired ones, the most recently ended first."""
    state = silence.state(now)
    if state == "active":
        return 0, silence.ends_at.timestamp()
    if state == "pending":
        return 1, silence.starts_at.timestamp()
    return 2, -silence.ends_at.timestamp()


def gettable(silence: Silence, now: datetime) -> dict[str, Any]:
    return {
        "id": silence.id,
        "status": {"state": silence.state(now)},
        "updatedAt": iso(silence.updated_at),
        "matchers": [m.to_json() for m in silence.matchers],
        "startsAt": iso(silence.starts_at),
        "endsAt": iso(silence.ends_at),
        "createdBy": silence.created_by,
        "comment": silence.comment,
    }


def _matchers(body: Sequence[MatcherBody]) -> tuple[SilenceMatcher, ...]:
    if not body:
        raise SilenceError(400, "at least one matcher is required")
    out: list[SilenceMatcher] = []
    for i, m in enumerate(body):
        where = f"matchers[{i}]"
        if not m.name:
            raise SilenceError(400, f"{where}: the label name is empty")
        try:
            out.append(SilenceMatcher(m.name, m.value, m.isRegex, m.isEqual))
        except RegexError as exc:
            raise SilenceError(400, f"{where} ({m.name}): invalid regex {m.value!r}: {exc}") from None
    if all(m.matches_empty() for m in out):
        # Alertmanager's rule: such a silence would also mute every alert lacking the labels.
        shown = ", ".join(str(m) for m in out)
        raise SilenceError(
            400,
            f"every matcher ({shown}) matches the empty string, so the silence would mute "
            "alerts without those labels too: at least one must not",
        )
    return tuple(out)


def _can_update(prev: Silence, new: Silence, now: datetime) -> bool:
    """Alertmanager's ``canUpdate``: a change that leaves what was silenced so far as it was.
    Anything else expires the old silence and makes a new one."""
    if prev.matchers != new.matchers:
        return False
    state = prev.state(now)
    if state == "active":
        same_start = int(prev.starts_at.timestamp()) == int(new.starts_at.timestamp())
        return same_start and new.ends_at >= now
    if state == "pending":
        return new.starts_at >= now
    return False


def _filter_matcher(text: str) -> SilenceMatcher:
    try:
        parsed = Matcher.parse(text)
    except ValueError as exc:
        raise SilenceError(400, f"filter {text!r}: {exc}") from None
    return SilenceMatcher(parsed.name, parsed.value, parsed.op in ("=~", "!~"), parsed.op in ("=", "=~"))


class SilenceService:
    """Validates and does the work; ``on_change`` wakes whoever applies the silences."""

    def __init__(self, silences: Silences, clock: Clock, on_change: Callable[[], None]) -> None:
        self._silences = silences
        self._clock = clock
        self._on_change = on_change

    async def post(self, body: PostableSilence) -> str:
        """Create a silence, or update the one ``body.id`` names; the id it now has (a new one
        when the change would rewrite what was silenced so far). Raises :class:`SilenceError`."""
        now = self._clock.now()
        if body.startsAt >= body.endsAt:
            raise SilenceError(
                400, f"endsAt ({iso(body.endsAt)}) must be after startsAt ({iso(body.startsAt)})"
            )
        if body.endsAt < now:
            raise SilenceError(400, f"endsAt ({iso(body.endsAt)}) is in the past (now: {iso(now)})")
        matchers = _matchers(body.matchers)
        prev = None
        if body.id:
            prev = await self._silences.get(body.id)
            if prev is None:
                raise SilenceError(404, f"silence {body.id} not found")
        silence = Silence(
            id=body.id or "",
            matchers=matchers,
            starts_at=body.startsAt,
            ends_at=body.endsAt,
            created_by=body.createdBy,
            comment=body.comment,
            updated_at=now,
        )
        if prev is not None and _can_update(prev, silence, now):
            await self._silences.upsert(silence)
        else:
            silence = replace(silence, id=str(uuid.uuid4()), starts_at=max(silence.starts_at, now))
            if prev is None:
                await self._silences.upsert(silence)
            else:
                await self._silences.replace(prev.id, silence, now)
        self._on_change()
        return silence.id

    async def get(self, silence_id: str) -> Silence:
        found = await self._silences.get(silence_id)
        if found is None:
            raise SilenceError(404, f"silence {silence_id} not found")
        return found

    async def query(
        self,
        filters: Sequence[str] = (),
        states: frozenset[SilenceState] = frozenset(_STATE_ORDER),
    ) -> list[Silence]:
        """The silences in ``states`` that have every filter matcher (same name, type and
        value: a filter names matchers, it is not matched against them), in Alertmanager's order."""
        wanted = [_filter_matcher(f) for f in filters]
        now = self._clock.now()
        found = [
            s
            for s in await self._silences.list_all()
            if s.state(now) in states and all(w in s.matchers for w in wanted)
        ]
        return sorted(found, key=lambda s: sort_key(s, now))

    async def expire(self, silence_id: str) -> Silence:
        expired = await self._silences.expire(silence_id, self._clock.now())
        if expired is None:
            raise SilenceError(404, f"silence {silence_id} not found")
        self._on_change()
        return expired

    def now(self) -> datetime:
        return self._clock.now()


def _refused(exc: SilenceError) -> Response:
    return JSONResponse(exc.message, status_code=exc.status)


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "true").lower()
    if raw not in ("true", "false"):
        raise SilenceError(400, f"query parameter {name}: expected true or false, got {raw!r}")
    return raw == "true"


async def _postable(request: Request) -> PostableSilence:
    try:
        raw = await read_limited(request, MAX_COMMAND_BYTES)
    except BodyTooLarge:
        raise SilenceError(413, f"body larger than {MAX_COMMAND_BYTES} bytes") from None
    except ClientDisconnect:
        raise SilenceError(400, "client disconnected before the body was read") from None
    try:
        doc = load_json(raw)
    except PayloadError as exc:
        raise SilenceError(400 if exc.kind == "malformed" else 422, exc.reason) from None
    if not isinstance(doc, dict):
        raise SilenceError(422, "expected a JSON object (a postableSilence)")
    # Silences are stored as text, and PostgreSQL text cannot hold NUL.
    where = find_text(doc, lambda text: "\x00" in text)
    if where is not None:
        raise SilenceError(400, f"{where}: contains a NUL character (\\u0000)")
    try:
        return PostableSilence.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors()
        )
        raise SilenceError(422, f"invalid silence: {problems}") from None


def silence_routes(service: SilenceService) -> list[Route]:
    async def post_silences(request: Request) -> Response:
        try:
            silence_id = await service.post(await _postable(request))
        except SilenceError as exc:
            return _refused(exc)
        return JSONResponse({"silenceID": silence_id})

    async def get_silences(request: Request) -> Response:
        try:
            states = frozenset(s for s in _STATE_ORDER if _flag(request, s))
            found = await service.query(request.query_params.getlist("filter"), states)
        except SilenceError as exc:
            return _refused(exc)
        now = service.now()
        return JSONResponse([gettable(s, now) for s in found])

    async def get_silence(request: Request) -> Response:
        try:
            found = await service.get(request.path_params["silence_id"])
        except SilenceError as exc:
            return _refused(exc)
        return JSONResponse(gettable(found, service.now()))

    async def delete_silence(request: Request) -> Response:
        try:
            await service.expire(request.path_params["silence_id"])
        except SilenceError as exc:
            return _refused(exc)
        # Alertmanager answers an empty 200, and amtool reads nothing more.
        return Response(status_code=200)

    return [
        Route("/api/v2/silences", get_silences, methods=["GET"]),
        Route("/api/v2/silences", post_silences, methods=["POST"]),
        Route("/api/v2/silence/{silence_id}", get_silence, methods=["GET"]),
        Route("/api/v2/silence/{silence_id}", delete_silence, methods=["DELETE"]),
    ]
