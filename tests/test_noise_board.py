"""Noise control where people look: the incident API's hold and flapping filters, the
incidents one causes, ``GET /api/v1/noise``, and the board (over HTTP, and once in a real
browser): held incidents out of the paging ones, inhibited ones under their source's card.

Every incident is held the way production holds it: alerts through the webhook, rules from a
noise.yaml of the test's own, a silence through the v2 silences API."""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from service.clock import ManualClock
from service.http.ui.render import board, page
from service.models import Flapping, Hold, HoldKind, Incident, IncidentStatus
from service.ruleset.noise import NoiseFile
from service.store.store import Store
from service.store.views import IncidentFilter, IncidentViews
from tests.support.browser import chromium_missing, launch_options, log_in, log_in_page, now_rfc3339
from tests.support.incidents import make_incident
from tests.support.payloads import alert, body, webhook
from tests.support.service import RULES, RunningService, run_service, test_settings
from tests.support.time import T0

TOKEN = "noise-board-token-0123456789"
BEARER = {"authorization": f"Bearer {TOKEN}"}

NOISE = """
time_intervals:
  - name: always
    time_intervals: [{}]
maintenance:
  - name: test-window
    matchers: ['alertname="InMaintenance"']
    time_intervals: [always]
    comment: planned work
inhibit_rules:
  - name: database-down-explains-api-errors
    source_matchers: ['alertname="DatabaseUnavailable"']
    target_matchers: ['alertname="ApiDown"']
    equal: [cluster]
flapping:
  reopens: 3
  within: 1h
  quiet: 30m
thresholds:
  - name: test-needs-three
    matchers: ['alertname="TestPending"']
    min_firing: 3
heartbeats:
  - name: test-watchdog
    matchers: ['alertname="Watchdog"']
    interval: 1h
"""


@dataclass(frozen=True)
class Held:
    source: str  # DatabaseUnavailable: pages, and inhibits ...
    inhibited: str  # ... ApiDown in the same cluster
    pending: str  # TestPending: 1 firing of the 3 its threshold waits for
    silenced: str
    maintenance: str
    silence_id: str


@pytest.fixture(scope="module")
async def svc(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningService]:
    tmp = tmp_path_factory.mktemp("noise-board")
    rules = tmp / "rules"
    shutil.copytree(RULES, rules)
    (rules / "noise.yaml").write_text(NOISE)
    async with run_service(test_settings(kafka, tmp, webhook_token=TOKEN, rules_dir=rules)) as running:
        yield running


def _of(svc: RunningService, suffix: str, name: str) -> list[dict[str, Any]]:
    return [e for e in svc.events.of_type(suffix) if e["data"]["group_labels"].get("alertname") == name]


async def fire(svc: RunningService, name: str, event: str, **labels: str) -> str:
    """Post a firing alert; the id of its incident once ``event`` says so."""
    resp = await svc.post_webhook(
        body(webhook(alert(name, starts_at=now_rfc3339(), namespace="noise", **labels))), **BEARER
    )
    assert resp.status_code == 202, resp.text
    await svc.events.wait_for(lambda _: bool(_of(svc, event, name)))
    return str(_of(svc, event, name)[-1]["data"]["id"])


@pytest.fixture(scope="module")
async def held(svc: RunningService) -> Held:
    now = datetime.now(UTC)
    silence = {
        "matchers": [{"name": "alertname", "value": "Silenced", "isRegex": False, "isEqual": True}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "alice",
        "comment": "db maintenance",
    }
    resp = await svc.client.post(f"{svc.url}/api/v2/silences", json=silence, headers=BEARER)
    assert resp.status_code == 200, resp.text
    source = await fire(svc, "DatabaseUnavailable", "incident.opened", cluster="c1")
    return Held(
        source=source,
        inhibited=await fire(svc, "ApiDown", "incident.suppressed", cluster="c1"),
        pending=await fire(svc, "TestPending", "incident.suppressed"),
        silenced=await fire(svc, "Silenced", "incident.suppressed"),
        maintenance=await fire(svc, "InMaintenance", "incident.suppressed"),
        silence_id=resp.json()["silenceID"],
    )


async def api(svc: RunningService, path: str) -> httpx.Response:
    return await svc.client.get(f"{svc.url}{path}", headers=BEARER)


async def listed(svc: RunningService, query: str) -> list[str]:
    resp = await api(svc, f"/api/v1/incidents?{query}")
    assert resp.status_code == 200, resp.text
    return [i["id"] for i in resp.json()["incidents"]]


def text(fragment: str) -> str:
    """What a reader sees of an HTML fragment: tags dropped, entities read, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def element(page: str, tag: str, element_id: str) -> str:
    """The HTML of the element ``<tag ... id="element_id">``, up to its closing tag (no
    nesting of the same tag inside)."""
    start = page.index(f'id="{element_id}"')
    start = page.rindex(f"<{tag}", 0, start)
    return page[start : page.index(f"</{tag}>", start)]


async def test_the_hold_filter_lists_the_incidents_under_each_hold(svc: RunningService, held: Held) -> None:
    assert await listed(svc, "hold=pending") == [held.pending]
    assert await listed(svc, "hold=inhibited") == [held.inhibited]
    assert await listed(svc, "hold=silenced") == [held.silenced]
    assert await listed(svc, "hold=maintenance") == [held.maintenance]
    assert set(await listed(svc, "hold=any")) == {
        held.pending,
        held.inhibited,
        held.silenced,
        held.maintenance,
    }
    paging = await listed(svc, "hold=none")
    assert held.source in paging and not {held.pending, held.inhibited, held.silenced} & set(paging)
    # Combined with the other filters, and with the snapshot saying why.
    assert await listed(svc, "hold=pending&status=triggered&severity=SEV-3") == [held.pending]
    assert await listed(svc, "hold=pending&status=resolved") == []
    [pending] = (await api(svc, "/api/v1/incidents?hold=pending")).json()["incidents"]
    assert pending["suppression"]["kind"] == "pending"
    assert pending["suppression"]["reason"] == "threshold test-needs-three: waiting for 3 firing (1 now)"
    assert set(await listed(svc, "flapping=false")) >= {held.source, held.pending}
    assert await listed(svc, "flapping=true") == []


async def test_a_hold_or_flapping_value_it_does_not_know_is_a_422_naming_the_choices(
    svc: RunningService,
) -> None:
    resp = await api(svc, "/api/v1/incidents?hold=paused")
    assert resp.status_code == 422
    assert resp.json()["error"] == "hold must be one of silenced, maintenance, inhibited, pending, any, none"
    resp = await api(svc, "/api/v1/incidents?flapping=yes&hold=")
    assert resp.status_code == 422
    assert resp.json()["error"] == (
        "hold must be one of silenced, maintenance, inhibited, pending, any, none; flapping must be true or false"
    )


async def test_an_incident_names_the_incidents_it_causes(svc: RunningService, held: Held) -> None:
    source = (await api(svc, f"/api/v1/incidents/{held.source}")).json()
    assert source["caused"] == [{"id": held.inhibited, "title": "ApiDown is happening"}]
    assert source["incident"]["suppression"] is None
    target = (await api(svc, f"/api/v1/incidents/{held.inhibited}")).json()
    assert target["caused"] == []
    suppression = target["incident"]["suppression"]
    assert (suppression["kind"], suppression["by"]) == ("inhibited", held.source)
    assert suppression["reason"] == (
        f"caused by {held.source} (DatabaseUnavailable is happening): database-down-explains-api-errors"
    )


async def test_the_noise_api_shows_silences_windows_rules_and_heartbeats(
    svc: RunningService, held: Held
) -> None:
    assert (await svc.client.get(f"{svc.url}/api/v1/noise")).status_code == 401
    resp = await api(svc, "/api/v1/noise")
    assert resp.status_code == 200
    noise = resp.json()
    [silence] = noise["silences"]
    assert silence["id"] == held.silence_id
    assert silence["matchers"] == ['alertname="Silenced"']
    assert (silence["createdBy"], silence["comment"], silence["state"]) == (
        "alice",
        "db maintenance",
        "active",
    )
    assert datetime.fromisoformat(silence["endsAt"]) > datetime.fromisoformat(silence["startsAt"])
    assert noise["maintenance"] == [
        {
            "name": "test-window",
            "matchers": ['alertname="InMaintenance"'],
            "time_intervals": ["always"],
            "comment": "planned work",
            "active": True,
            "next_change": None,  # always on
        }
    ]
    assert noise["inhibit_rules"] == [
        {
            "name": "database-down-explains-api-errors",
            "source_matchers": ['alertname="DatabaseUnavailable"'],
            "target_matchers": ['alertname="ApiDown"'],
            "equal": ["cluster"],
        }
    ]
    assert noise["flapping"] == {"reopens": 3, "within": "1h", "quiet": "30m"}
    assert noise["thresholds"] == [
        {
            "name": "test-needs-three",
            "matchers": ['alertname="TestPending"'],
            "min_firing": 3,
            "firing_for": None,
            "burst": None,
        }
    ]
    [beat] = noise["heartbeats"]
    assert {k: beat[k] for k in ("name", "matchers", "interval", "missing_since")} == {
        "name": "test-watchdog",
        "matchers": ['alertname="Watchdog"'],
        "interval": "1h",
        "missing_since": None,
    }
    # The noise worker began watching it when the service started.
    assert beat["last_seen"] is not None


async def test_the_board_shows_held_incidents_apart_and_inhibited_ones_under_their_source(
    svc: RunningService, held: Held
) -> None:
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
        await log_in(client, TOKEN, "alice")
        live = (await client.get("/ui/live")).text
    source_card = element(live, "article", f"inc-{held.source}")
    assert f'href="/ui/incidents/{held.inhibited}"' in source_card
    assert "caused by this: ApiDown is happening (inhibited)" in text(source_card)
    # Held ones have no card among the paging ones.
    for inc in (held.inhibited, held.pending, held.silenced, held.maintenance):
        assert re.search(rf'<article class="incident [^"]*" id="inc-{inc}"', live) is None, inc
    not_paging = live[live.index("<h2>Not paging") : live.index('<section class="panel noise">')]
    assert f'id="inc-{held.inhibited}"' not in not_paging  # it sits under its source
    pending = text(element(not_paging, "li", f"inc-{held.pending}"))
    assert "pending · threshold test-needs-three: waiting for 3 firing (1 now) · since " in pending
    silenced = text(element(not_paging, "li", f"inc-{held.silenced}"))
    assert re.search(r"silenced · silenced by alice: db maintenance · since .+ · until \d{4}-", silenced), (
        silenced
    )
    window = text(element(not_paging, "li", f"inc-{held.maintenance}"))
    assert "maintenance · maintenance window test-window: planned work" in window

    noise = live[live.index('<section class="panel noise">') :]
    row = text(element(noise, "tr", f"silence-{held.silence_id}"))
    assert row.startswith('alertname="Silenced" active ') and row.endswith(" alice db maintenance"), row
    assert "test-window" in noise and "database-down-explains-api-errors" in noise
    assert "more than 3 reopens within 1h: flapping until quiet for 30m" in text(noise)
    assert "test-needs-three" in noise and "3 firing" in noise and "test-watchdog" in noise


async def test_the_incident_page_shows_its_hold_its_cause_and_what_it_causes(
    svc: RunningService, held: Held
) -> None:
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
        await log_in(client, TOKEN, "alice")
        target = (await client.get(f"/ui/incidents/{held.inhibited}/live")).text
        source = (await client.get(f"/ui/incidents/{held.source}/live")).text
        pending = (await client.get(f"/ui/incidents/{held.pending}")).text
    assert (
        f'<dd class="caused-by"><a href="/ui/incidents/{held.source}">DatabaseUnavailable is happening</a>'
        in target
    )
    assert "Not paging inhibited · caused by" in text(target)
    # Its response clock starts when the hold lifts: no countdown to a deadline that moves.
    assert '<span class="clock held">not started: it pages when the hold lifts</span>' in target
    assert f'id="caused-{held.inhibited}"' in source and "Causes ApiDown is happening (inhibited)" in text(
        source
    )
    assert "Not paging pending · threshold test-needs-three: waiting for 3 firing (1 now)" in text(pending)


@pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))
async def test_in_a_browser_the_board_shows_not_paging_and_the_cause_links_to_its_source(
    svc: RunningService, held: Held
) -> None:
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(**launch_options())
        try:
            page = await browser.new_page()
            await log_in_page(page, svc.url, TOKEN, "alice")
            panel = page.locator("section.not-paging")
            await expect(panel.get_by_role("heading", name=re.compile("^Not paging"))).to_be_visible()
            await expect(panel.locator(f"#inc-{held.pending} .held-why")).to_contain_text(
                "threshold test-needs-three: waiting for 3 firing (1 now)"
            )
            caused = page.locator(f"#inc-{held.source} #caused-{held.inhibited}")
            await expect(caused).to_contain_text("caused by this: ApiDown is happening (inhibited)")
            # Survives the board's live refresh (htmx swaps the part every 2 s).
            async with page.expect_response(lambda r: r.url.endswith("/ui/live")):
                pass
            await caused.get_by_role("link", name="ApiDown is happening").click()
            await expect(page).to_have_url(f"{svc.url}/ui/incidents/{held.inhibited}")
            await (
                page.locator(".caused-by")
                .get_by_role("link", name="DatabaseUnavailable is happening")
                .click()
            )
            await expect(page).to_have_url(f"{svc.url}/ui/incidents/{held.source}")
            await expect(page.locator(f"#caused-{held.inhibited}")).to_be_visible()
        finally:
            await browser.close()


def _held(inc_id: str, kind: HoldKind, by: str, minutes: int) -> Incident:
    inc = make_incident(inc_id, inc_id, "SEV-2", T0 + timedelta(minutes=minutes))
    inc.hold = Hold(kind, by, f"{kind.value} by {by}", T0)
    return inc


def test_the_board_puts_each_inhibited_incident_under_its_source_even_down_a_chain() -> None:
    paging = make_incident("src", "DatabaseUnavailable", "SEV-1")
    paging.flapping = Flapping(T0, T0 + timedelta(minutes=30), flaps=4)
    incidents = [
        paging,
        _held("a", HoldKind.INHIBITED, "src", 1),
        _held("b", HoldKind.INHIBITED, "a", 2),  # inhibited by one that is inhibited itself
        _held("silenced", HoldKind.SILENCED, "s-1", 3),
        _held("c", HoldKind.INHIBITED, "silenced", 4),  # under a held source: in "Not paging"
        _held("gone", HoldKind.INHIBITED, "resolved-meanwhile", 5),  # its source is not open
        _held("d", HoldKind.INHIBITED, "gone", 8),
        _held("x", HoldKind.INHIBITED, "y", 6),  # a loop: neither is under a card on the board
        _held("y", HoldKind.INHIBITED, "x", 7),
    ]
    shown = board(incidents, ["SEV-1", "SEV-2"], T0)
    assert shown.paging == 1
    [group] = shown.groups
    [card] = group["incidents"]
    assert [(c["id"], [d["id"] for d in c["caused"]]) for c in card["caused"]] == [("a", ["b"])]
    assert [c["id"] for c in shown.held] == ["silenced", "gone", "x", "y"]
    assert [c["id"] for c in shown.held[0]["caused"]] == ["c"]
    assert [c["id"] for c in shown.held[1]["caused"]] == ["d"]

    # What the board's template needs besides the incidents (no remediation, no noise panel).
    remediation = SimpleNamespace(
        paused=False,
        mode="auto",
        rules_mode="auto",
        cluster=True,
        pause=None,
        paused_by_config=False,
        holds=[],
    )
    context = {
        "session": SimpleNamespace(csrf="0" * 64, who="t"),
        "remediation": remediation,
        "jobs": [],
        "groups": shown.groups,
        "held": shown.held,
        "open_count": shown.paging,
    }
    html_ = bytes(page("_board_live.html", context).body).decode()
    src = text(element(html_, "article", "inc-src"))
    assert "flapping \N{MULTIPLICATION SIGN}4 quiet until 2026-11-26 12:30:00 UTC" in src
    assert "caused by this: a (inhibited)" in src and "caused by this: b (inhibited)" in src


def test_a_hold_holds_only_an_open_incident() -> None:
    inc = _held("r", HoldKind.PENDING, "t", 0)
    assert IncidentFilter(hold="pending").wants(inc) and not IncidentFilter(hold="none").wants(inc)
    inc.status = IncidentStatus.RESOLVED  # resolved while pending: the hold stays as history
    assert IncidentFilter(hold="none").wants(inc) and not IncidentFilter(hold="any").wants(inc)
    assert IncidentFilter(hold="any").stored_status == "open"
    assert IncidentFilter(flapping=False).wants(inc) and not IncidentFilter(flapping=True).wants(inc)


async def test_a_window_of_overlapping_intervals_goes_off_when_the_last_one_ends(store: Store) -> None:
    noise = NoiseFile.model_validate(
        {
            "time_intervals": [
                {
                    "name": "early",
                    "time_intervals": [{"times": [{"start_time": "02:00", "end_time": "04:00"}]}],
                },
                {
                    "name": "late",
                    "time_intervals": [{"times": [{"start_time": "03:00", "end_time": "05:00"}]}],
                },
            ],
            "maintenance": [
                {"name": "w", "matchers": ['alertname="X"'], "time_intervals": ["early", "late"]},
            ],
        }
    )
    at = T0.replace(hour=2, minute=30)
    state = await IncidentViews(store, ManualClock(at)).noise(noise)
    [window] = state.windows
    assert (window.active, window.next_change) == (True, T0.replace(hour=5))
    state = await IncidentViews(store, ManualClock(T0.replace(hour=6))).noise(noise)
    assert (state.windows[0].active, state.windows[0].next_change) == (
        False,
        T0.replace(hour=2) + timedelta(days=1),
    )
    assert state.silences == [] and state.heartbeats == []


async def test_reading_heartbeats_starts_watching_none(store: Store) -> None:
    noise = NoiseFile.model_validate(
        {"heartbeats": [{"name": "wd", "matchers": ['alertname="Watchdog"'], "interval": "5m"}]}
    )
    views = IncidentViews(store, ManualClock(T0))
    [beat] = (await views.noise(noise)).heartbeats
    assert (beat.heartbeat.name, beat.last_seen, beat.missing_since) == ("wd", None, None)
    assert await store.heartbeats.all() == []  # the noise worker's watch() begins it, not a reader
    await store.heartbeats.watch(["wd"], T0)
    await store.heartbeats.set_missing("wd", T0 + timedelta(minutes=5))
    [beat] = (await views.noise(noise)).heartbeats
    assert (beat.last_seen, beat.missing_since) == (T0, T0 + timedelta(minutes=5))
