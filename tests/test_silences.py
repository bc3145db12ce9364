"""Silences: the repository, Alertmanager's v2 silences API, and the real amtool against it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from starlette.applications import Starlette

from service.clock import ManualClock, iso
from service.http.silences import SilenceService, silence_routes
from service.store.silences import Silence, SilenceMatcher
from service.store.store import Store
from service.store.tables import silences
from tests.support.service import RunningService, run_service, test_settings
from tests.support.time import T0

H = timedelta(hours=1)
M = timedelta(minutes=1)


def eq(name: str, value: str) -> SilenceMatcher:
    return SilenceMatcher(name, value, is_regex=False)


def rx(name: str, value: str) -> SilenceMatcher:
    return SilenceMatcher(name, value, is_regex=True)


def silence(
    sid: str, starts: datetime, ends: datetime, *matchers: SilenceMatcher, by: str = "alice"
) -> Silence:
    return Silence(
        sid, matchers or (eq("alertname", "DiskFull"),), starts, ends, by, "db maintenance", starts
    )


# -- matchers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        (eq("alertname", "DiskFull"), {"alertname": "DiskFull"}, True),
        (eq("alertname", "DiskFull"), {"alertname": "DiskFullX"}, False),
        (eq("team", ""), {"alertname": "DiskFull"}, True),  # a missing label is ""
        (SilenceMatcher("team", "db", False, is_equal=False), {}, True),
        (SilenceMatcher("team", "db", False, is_equal=False), {"team": "db"}, False),
        (rx("instance", "db-.*"), {"instance": "db-1"}, True),
        (rx("instance", "db-.*"), {"instance": "xdb-1"}, False),  # anchored at the start
        (rx("instance", "db-1"), {"instance": "db-10"}, False),  # and at the end
        (rx("instance", "db-1"), {"instance": "db-1\n"}, False),  # Go's "$", not Python's
        (rx("instance", "a|b"), {"instance": "ab"}, False),  # the group holds the alternation
        (rx("instance", ".*"), {}, True),
        (SilenceMatcher("instance", "db-.*", True, is_equal=False), {"instance": "db-1"}, False),
        (SilenceMatcher("instance", "db-.*", True, is_equal=False), {"instance": "web-1"}, True),
        (SilenceMatcher("instance", "db-.*", True, is_equal=False), {}, True),
    ],
)
def test_matcher_semantics_are_alertmanagers(
    matcher: SilenceMatcher, labels: dict[str, str], expected: bool
) -> None:
    assert matcher.matches(labels) is expected


def test_matcher_json_is_the_apis_shape_and_round_trips() -> None:
    m = SilenceMatcher("instance", "db-.*", is_regex=True, is_equal=False)
    assert m.to_json() == {"name": "instance", "value": "db-.*", "isRegex": True, "isEqual": False}
    assert SilenceMatcher.from_json(m.to_json()) == m
    # isEqual is optional in the API and defaults to true.
    assert SilenceMatcher.from_json({"name": "a", "value": "b", "isRegex": False}).is_equal is True
    assert [str(x) for x in (eq("a", "b"), rx("a", "b"), m)] == ['a="b"', 'a=~"b"', 'instance!~"db-.*"']


def test_silence_matches_all_matchers_and_describes_itself() -> None:
    s = silence("3f2a1b2c-0000", T0, T0 + H, eq("alertname", "DiskFull"), rx("instance", "db-.*"))
    assert s.matches({"alertname": "DiskFull", "instance": "db-1"})
    assert not s.matches({"alertname": "DiskFull", "instance": "web-1"})
    assert not s.matches({"instance": "db-1"})
    assert s.describe() == 'silence 3f2a1b2c… by alice: "db maintenance"'


def test_state_follows_the_clock() -> None:
    s = silence("s", T0, T0 + H)
    assert s.state(T0 - M) == "pending"
    assert s.state(T0) == "active"
    assert s.state(T0 + H - M) == "active"
    assert s.state(T0 + H) == "expired"


# -- the repository ------------------------------------------------------------------


async def upsert_and_get_round_trip(db: Store) -> None:
    s = silence("a", T0, T0 + H, eq("alertname", "DiskFull"), SilenceMatcher("inst", "db-.*", True, False))
    await db.silences.upsert(s)
    assert await db.silences.get("a") == s
    changed = Silence("a", s.matchers, T0, T0 + 2 * H, "bob", "longer", T0 + M)
    await db.silences.upsert(changed)
    assert await db.silences.get("a") == changed
    assert await db.silences.get("missing") is None
    assert await db.silences.list_all() == [changed]


async def expire_ends_an_active_or_pending_silence_now_and_leaves_an_expired_one(db: Store) -> None:
    now = T0 + H
    await db.silences.upsert(silence("active", T0, T0 + 3 * H))
    await db.silences.upsert(silence("pending", T0 + 2 * H, T0 + 3 * H))
    await db.silences.upsert(silence("expired", T0, T0 + 30 * M))

    active = await db.silences.expire("active", now)
    assert active is not None
    assert (active.starts_at, active.ends_at, active.updated_at) == (T0, now, now)
    assert active.state(now) == "expired"
    # A pending one never became active: it starts and ends now.
    pending = await db.silences.expire("pending", now)
    assert pending is not None
    assert (pending.starts_at, pending.ends_at) == (now, now)
    before = await db.silences.get("expired")
    assert await db.silences.expire("expired", now) == before
    assert await db.silences.expire("missing", now) is None
    for sid in ("active", "pending"):
        assert await db.silences.get(sid) == (active if sid == "active" else pending)


async def active_and_next_change(db: Store) -> None:
    await db.silences.upsert(silence("now", T0, T0 + 2 * H))
    await db.silences.upsert(silence("later", T0 + H, T0 + 3 * H))
    await db.silences.upsert(silence("gone", T0 - 2 * H, T0 - H))

    assert [s.id for s in await db.silences.active(T0)] == ["now"]
    assert await db.silences.next_change(T0) == T0 + H  # "later" starts
    assert {s.id for s in await db.silences.active(T0 + H)} == {"now", "later"}
    assert await db.silences.next_change(T0 + H) == T0 + 2 * H  # "now" ends
    assert await db.silences.next_change(T0 + 2 * H) == T0 + 3 * H
    assert await db.silences.active(T0 + 3 * H) == []
    assert await db.silences.next_change(T0 + 3 * H) is None


async def a_stored_regex_re2_refuses_mutes_nothing(db: Store) -> None:
    """A silence saved by a version that compiled with Python's re (a backreference) still
    loads, lists as it was saved, and silences no alert: every page goes out."""
    await db.silences.upsert(silence("old", T0, T0 + H))
    stored = json.dumps([{"name": "instance", "value": "(db)\\1", "isRegex": True, "isEqual": False}])
    async with db.db.write() as conn:
        await conn.execute(update(silences).where(silences.c.id == "old").values(matchers=stored))
    [old] = await db.silences.active(T0)
    assert [m.to_json() for m in old.matchers] == json.loads(stored)
    assert not old.matches({"alertname": "DiskFull", "instance": "web"})
    assert not old.matches({"alertname": "DiskFull", "instance": "dbdb"})


REPOSITORY_CHECKS = [
    a_stored_regex_re2_refuses_mutes_nothing,
    upsert_and_get_round_trip,
    expire_ends_an_active_or_pending_silence_now_and_leaves_an_expired_one,
    active_and_next_change,
]


@pytest.mark.parametrize("check", REPOSITORY_CHECKS)
async def test_repository_on_sqlite(store: Store, check: Callable[[Store], Awaitable[None]]) -> None:
    await check(store)


@pytest.mark.parametrize("check", REPOSITORY_CHECKS)
async def test_repository_on_postgresql(pg_url: str, check: Callable[[Store], Awaitable[None]]) -> None:
    pg = Store(pg_url)
    await pg.start()
    try:
        await check(pg)
    finally:
        await pg.close()


# -- the HTTP API (in process, on a manual clock) ---------------------------------------


@dataclass
class Api:
    client: httpx.AsyncClient
    clock: ManualClock
    service: SilenceService
    changes: list[int] = field(default_factory=list)

    async def post(self, **fields: Any) -> httpx.Response:
        return await self.client.post("/api/v2/silences", json=postable(self.clock.now(), **fields))

    async def create(self, **fields: Any) -> str:
        resp = await self.post(**fields)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["silenceID"])

    async def get(self, sid: str) -> dict[str, Any]:
        resp = await self.client.get(f"/api/v2/silence/{sid}")
        assert resp.status_code == 200, resp.text
        doc: dict[str, Any] = resp.json()
        return doc


def postable(now: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "matchers": [
            {"name": "alertname", "value": "DiskFull", "isRegex": False, "isEqual": True},
            {"name": "instance", "value": "db-.*", "isRegex": True},
        ],
        "startsAt": iso(now),
        "endsAt": iso(now + H),
        "createdBy": "alice",
        "comment": "db maintenance",
        **fields,
    }


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:
    clock = ManualClock(T0)
    changes: list[int] = []
    service = SilenceService(store.silences, clock, on_change=lambda: changes.append(1))
    app = Starlette(routes=silence_routes(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield Api(client, clock, service, changes)


async def test_create_then_get_is_a_gettable_silence(api: Api) -> None:
    sid = await api.create()
    assert api.changes == [1]
    assert await api.get(sid) == {
        "id": sid,
        "status": {"state": "active"},
        "updatedAt": "2026-11-26T12:00:00Z",
        "matchers": [
            {"name": "alertname", "value": "DiskFull", "isRegex": False, "isEqual": True},
            {"name": "instance", "value": "db-.*", "isRegex": True, "isEqual": True},
        ],
        "startsAt": "2026-11-26T12:00:00Z",
        "endsAt": "2026-11-26T13:00:00Z",
        "createdBy": "alice",
        "comment": "db maintenance",
    }


async def test_a_new_silence_starting_in_the_past_starts_now(api: Api) -> None:
    sid = await api.create(startsAt=iso(T0 - H))
    assert (await api.get(sid))["startsAt"] == iso(T0)


async def test_list_is_in_alertmanagers_order(api: Api) -> None:
    later = await api.create(endsAt=iso(T0 + 2 * H))
    sooner = await api.create(endsAt=iso(T0 + H))
    pending_late = await api.create(startsAt=iso(T0 + 2 * H), endsAt=iso(T0 + 3 * H))
    pending_soon = await api.create(startsAt=iso(T0 + H), endsAt=iso(T0 + 3 * H))
    old = await api.create(endsAt=iso(T0 + 10 * M))
    recent = await api.create(endsAt=iso(T0 + 20 * M))
    api.clock.advance(30 * M)
    resp = await api.client.get("/api/v2/silences")
    assert resp.status_code == 200
    listed = [(s["id"], s["status"]["state"]) for s in resp.json()]
    assert listed == [
        (sooner, "active"),
        (later, "active"),
        (pending_soon, "pending"),
        (pending_late, "pending"),
        (recent, "expired"),
        (old, "expired"),
    ]
    resp = await api.client.get("/api/v2/silences", params={"active": "false", "expired": "false"})
    assert [s["id"] for s in resp.json()] == [pending_soon, pending_late]


async def test_filter_names_matchers_of_the_silence(api: Api) -> None:
    disk = await api.create()
    other = await api.create(matchers=[{"name": "alertname", "value": "ApiDown", "isRegex": False}])

    async def ids(*filters: str) -> list[str]:
        resp = await api.client.get("/api/v2/silences", params=[("filter", f) for f in filters])
        assert resp.status_code == 200, resp.text
        return [s["id"] for s in resp.json()]

    assert sorted(await ids()) == sorted([disk, other])
    assert await ids('alertname="DiskFull"') == [disk]
    assert await ids("alertname=DiskFull", 'instance=~"db-.*"') == [disk]
    # A filter is compared with the silence's matchers (name, type, value), not matched
    # against them as labels, as in Alertmanager.
    assert await ids('instance="db-.*"') == []
    assert await ids('instance=~"db-1"') == []
    assert await ids("alertname=~.+") == []
    resp = await api.client.get("/api/v2/silences", params={"filter": "alertname"})
    assert resp.status_code == 400
    assert "filter 'alertname'" in resp.json()


async def test_update_in_place_keeps_the_id(api: Api) -> None:
    sid = await api.create()
    api.clock.advance(M)
    again = await api.create(id=sid, startsAt=iso(T0), endsAt=iso(T0 + 2 * H), comment="longer")
    assert again == sid
    got = await api.get(sid)
    assert (got["endsAt"], got["comment"], got["updatedAt"]) == (iso(T0 + 2 * H), "longer", iso(T0 + M))
    assert len((await api.client.get("/api/v2/silences")).json()) == 1
    assert api.changes == [1, 1]


async def test_changing_the_matchers_expires_the_old_silence_and_makes_a_new_one(api: Api) -> None:
    sid = await api.create()
    api.clock.advance(M)
    new = await api.create(id=sid, matchers=[{"name": "alertname", "value": "DiskFull", "isRegex": False}])
    assert new != sid
    assert (await api.get(sid))["status"]["state"] == "expired"
    assert (await api.get(sid))["endsAt"] == iso(T0 + M)
    assert (await api.get(new))["status"]["state"] == "active"


async def test_posting_an_expired_silence_again_makes_a_new_one(api: Api) -> None:
    # Alertmanager answers 200 with a new id here, not 400: the old one stays as history.
    sid = await api.create(endsAt=iso(T0 + M))
    api.clock.advance(2 * M)
    new = await api.create(id=sid)
    assert new != sid
    assert (await api.get(sid))["endsAt"] == iso(T0 + M)
    assert (await api.get(new))["status"]["state"] == "active"


async def test_expire_over_http(api: Api) -> None:
    sid = await api.create()
    api.clock.advance(M)
    resp = await api.client.delete(f"/api/v2/silence/{sid}")
    assert (resp.status_code, resp.content) == (200, b"")
    got = await api.get(sid)
    assert (got["status"]["state"], got["endsAt"]) == ("expired", iso(T0 + M))
    assert api.changes == [1, 1]
    for method in ("GET", "DELETE"):
        resp = await api.client.request(method, "/api/v2/silence/no-such-id")
        assert (resp.status_code, resp.json()) == (404, "silence no-such-id not found")


NOT_EMPTY = {"name": "alertname", "value": "DiskFull", "isRegex": False}


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        (
            {"endsAt": iso(T0)},
            400,
            "endsAt (2026-11-26T12:00:00Z) must be after startsAt (2026-11-26T12:00:00Z)",
        ),
        (
            {"startsAt": iso(T0 - 2 * H), "endsAt": iso(T0 - H)},
            400,
            "endsAt (2026-11-26T11:00:00Z) is in the past (now: 2026-11-26T12:00:00Z)",
        ),
        ({"matchers": []}, 400, "at least one matcher is required"),
        (
            {"matchers": [NOT_EMPTY, {"name": "instance", "value": "db-(", "isRegex": True}]},
            400,
            "matchers[1] (instance): invalid regex 'db-(': missing ): db-(",
        ),
        (
            # Alertmanager's RE2 has no backreferences; Python's re would have taken it.
            {"matchers": [NOT_EMPTY, {"name": "instance", "value": "(db)\\1", "isRegex": True}]},
            400,
            "matchers[1] (instance): invalid regex '(db)\\\\1': invalid escape sequence: \\1",
        ),
        (
            {"matchers": [{"name": "", "value": "x", "isRegex": False}]},
            400,
            "matchers[0]: the label name is empty",
        ),
        (
            {
                "matchers": [
                    {"name": "team", "value": "", "isRegex": False},
                    {"name": "x", "value": ".*", "isRegex": True},
                ]
            },
            400,
            'every matcher (team="", x=~".*") matches the empty string, so the silence would mute alerts without those labels too: at least one must not',
        ),
        ({"comment": "a\x00b"}, 400, "comment: contains a NUL character (\\u0000)"),
        (
            {"id": "3f2a0000-0000-4000-8000-000000000000"},
            404,
            "silence 3f2a0000-0000-4000-8000-000000000000 not found",
        ),
        ({"createdBy": None}, 422, "invalid silence: createdBy: Input should be a valid string"),
        (
            {"startsAt": "2026-11-26T12:00:00"},
            422,
            "invalid silence: startsAt: Input should have timezone info",
        ),
        (
            {"matchers": [{"name": "a", "value": "b"}]},
            422,
            "invalid silence: matchers.0.isRegex: Field required",
        ),
    ],
)
async def test_refusals(api: Api, fields: dict[str, Any], status: int, message: str) -> None:
    resp = await api.post(**fields)
    assert (resp.status_code, resp.json()) == (status, message)
    assert api.changes == []


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        (b'{"matchers": [', 400, "body is not valid JSON: Expecting value: line 1 column 15 (char 14)"),
        (b"[]", 422, "expected a JSON object (a postableSilence)"),
        (
            b"{}",
            422,
            "invalid silence: matchers: Field required; startsAt: Field required; endsAt: Field required; createdBy: Field required; comment: Field required",
        ),
    ],
)
async def test_bodies_that_are_not_a_silence(api: Api, content: bytes, status: int, message: str) -> None:
    resp = await api.client.post("/api/v2/silences", content=content)
    assert (resp.status_code, resp.json()) == (status, message)


# -- the real amtool against the running service ----------------------------------------

AMTOOL = shutil.which("amtool")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool not installed (apt install prometheus-alertmanager)"
)


@dataclass
class Run:
    code: int
    out: str
    err: str


async def amtool(url: str, home: Path, *args: str) -> Run:
    assert AMTOOL is not None
    # The service runs in this event loop: a blocking subprocess would stop it answering.
    proc = await asyncio.create_subprocess_exec(
        AMTOOL,
        f"--alertmanager.url={url}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # amtool reads ~/.config/amtool/config.yml: an empty home keeps the developer's out.
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture(scope="module")
async def svc(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningService]:
    async with run_service(test_settings(kafka, tmp_path_factory.mktemp("silences"))) as running:
        yield running


@needs_amtool
async def test_amtool_add_query_expire(svc: RunningService, tmp_path: Path) -> None:
    add = await amtool(
        svc.url,
        tmp_path,
        "silence",
        "add",
        "alertname=DiskFull",
        'instance=~"db-.*"',
        "--comment=db maintenance",
        "--author=alice",
        "--duration=1h",
    )
    assert add.code == 0, add.err
    sid = add.out.strip()
    stored = await svc.runtime.store.silences.get(sid)
    assert stored is not None
    assert stored.matchers == (eq("alertname", "DiskFull"), rx("instance", "db-.*"))
    assert (stored.created_by, stored.comment) == ("alice", "db maintenance")
    assert timedelta(minutes=59) < stored.ends_at - datetime.now(UTC) <= H

    query = await amtool(svc.url, tmp_path, "silence", "query", "-o", "json")
    assert query.code == 0, query.err
    listed = {s["id"]: s for s in json.loads(query.out)}
    assert listed[sid]["status"]["state"] == "active"
    assert listed[sid]["createdBy"] == "alice"

    filtered = await amtool(svc.url, tmp_path, "silence", "query", "-q", 'instance=~"db-.*"')
    assert filtered.code == 0, filtered.err
    assert sid in filtered.out.split()
    # The first argument without an operator is the alertname, as amtool reads it.
    other = await amtool(svc.url, tmp_path, "silence", "query", "-q", "ApiDown")
    assert (other.code, other.out) == (0, "")

    expire = await amtool(svc.url, tmp_path, "silence", "expire", sid)
    assert expire.code == 0, expire.err
    current = await amtool(svc.url, tmp_path, "silence", "query", "-q")
    assert sid not in current.out.split()
    expired = await amtool(svc.url, tmp_path, "silence", "query", "--expired", "-o", "json")
    assert expired.code == 0, expired.err
    assert {s["id"]: s["status"]["state"] for s in json.loads(expired.out)}[sid] == "expired"


@needs_amtool
async def test_amtool_shows_the_reason_of_a_refusal(svc: RunningService, tmp_path: Path) -> None:
    # amtool checks a regex itself; a silence of matchers that all match "" it leaves to us.
    run = await amtool(svc.url, tmp_path, "silence", "add", 'instance=~".*"', "--comment=c", "--author=a")
    assert run.code != 0
    assert 'every matcher (instance=~".*") matches the empty string' in run.err, run.err
    # amtool 0.25's client knows no 404 for DELETE (Alertmanager added it later), but the
    # status still shows.
    gone = await amtool(svc.url, tmp_path, "silence", "expire", "3f2a0000-0000-4000-8000-000000000000")
    assert gone.code != 0
    assert "status 404" in gone.err, gone.err


@needs_amtool
async def test_amtool_with_a_bearer_token(kafka: str, tmp_path: Path) -> None:
    config = tmp_path / "http.yml"
    config.write_text("authorization:\n  credentials: t0ken\n")
    settings = test_settings(kafka, tmp_path, webhook_token="t0ken")
    async with run_service(settings) as running:
        refused = await amtool(running.url, tmp_path, "silence", "add", "alertname=X", "--comment=c")
        assert refused.code != 0
        assert "401" in refused.out + refused.err
        add = await amtool(
            running.url,
            tmp_path,
            f"--http.config.file={config}",
            "silence",
            "add",
            "alertname=X",
            "--comment=c",
        )
        assert add.code == 0, add.err
        sid = add.out.strip()
        query = await amtool(running.url, tmp_path, f"--http.config.file={config}", "silence", "query", "-q")
        assert sid in query.out.split()
        expire = await amtool(running.url, tmp_path, f"--http.config.file={config}", "silence", "expire", sid)
        assert expire.code == 0, expire.err
        stored = await running.runtime.store.silences.get(sid)
        assert stored is not None
        assert stored.state(datetime.now(UTC)) == "expired"
