"""The incident board over HTTP: login, the session cookie, CSRF, and forms that apply
the same commands as the API (the browser test is test_board_browser.py)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from service.http.ui.session import COOKIE, Sessions
from tests.support.browser import csrf_of, open_incident
from tests.support.service import RunningService, run_service, test_settings

TOKEN = "board-test-token-0123456789"
BEARER = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
async def svc(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningService]:
    settings = test_settings(kafka, tmp_path_factory.mktemp("board"), webhook_token=TOKEN)
    async with run_service(settings) as running:
        yield running


@pytest.fixture
async def browser(svc: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no session yet (redirects not followed: the tests look at them)."""
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
        yield client


async def log_in(client: httpx.AsyncClient, who: str = "alice") -> str:
    """Log in through the form; the CSRF token of the board it lands on."""
    resp = await client.post("/ui/login", data={"token": TOKEN, "who": who})
    assert resp.status_code == 303 and resp.headers["location"] == "/ui/"
    board = await client.get("/ui/")
    assert board.status_code == 200
    return csrf_of(board.text)


async def incident(svc: RunningService, incident_id: str) -> dict:  # type: ignore[type-arg]
    resp = await svc.client.get(f"{svc.url}/api/v1/incidents/{incident_id}", headers=BEARER)
    assert resp.status_code == 200
    return resp.json()  # type: ignore[no-any-return]


async def test_root_and_ui_redirect_to_the_board(browser: httpx.AsyncClient) -> None:
    for path in ("/", "/ui"):
        resp = await browser.get(path)
        assert (resp.status_code, resp.headers["location"]) == (303, "/ui/")


async def test_without_a_session_every_page_goes_to_the_login_form(
    svc: RunningService, browser: httpx.AsyncClient
) -> None:
    inc = await open_incident(svc, "ApiDown", token=TOKEN, namespace="nologin")
    for path in ("/ui/", "/ui/live", f"/ui/incidents/{inc}", f"/ui/incidents/{inc}/live"):
        resp = await browser.get(path)
        assert (resp.status_code, resp.headers["location"]) == (303, "/ui/login"), path
    # htmx polling after the session ended is told where to go.
    polled = await browser.get("/ui/live", headers={"HX-Request": "true"})
    assert polled.status_code == 401 and polled.headers["hx-redirect"] == "/ui/login"
    form = await browser.get("/ui/login")
    assert form.status_code == 200 and 'type="password" name="token"' in form.text
    # A form posted without a session goes to the login form too, and changes nothing.
    posted = await browser.post(f"/ui/incidents/{inc}/ack", data={"csrf": "0" * 64})
    assert (posted.status_code, posted.headers["location"]) == (303, "/ui/login")
    assert (await incident(svc, inc))["incident"]["acknowledged_at"] is None


async def test_a_wrong_token_is_refused_and_sets_no_cookie(browser: httpx.AsyncClient) -> None:
    resp = await browser.post("/ui/login", data={"token": "not-the-token", "who": "mallory"})
    assert resp.status_code == 401 and "Wrong token" in resp.text
    assert "set-cookie" not in resp.headers
    missing = await browser.post("/ui/login", data={"who": "mallory"})
    assert missing.status_code == 401 and "set-cookie" not in missing.headers
    assert (await browser.get("/ui/")).status_code == 303


async def test_login_sets_an_hmac_session_cookie_never_the_token(browser: httpx.AsyncClient) -> None:
    resp = await browser.post("/ui/login", data={"token": TOKEN, "who": "alice"})
    assert resp.status_code == 303
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/ui", "Max-Age=43200"):
        assert attribute.lower() in cookie.lower(), attribute
    value = browser.cookies[COOKIE]
    assert TOKEN not in value and TOKEN not in cookie
    # The value is the HMAC the service derives from the token: any replica can check it.
    assert Sessions(TOKEN.encode()).read(value, time.time()) is not None
    assert Sessions(b"another-token").read(value, time.time()) is None
    board = await browser.get("/ui/")
    assert board.status_code == 200 and "alice" in board.text
    assert board.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in board.headers["content-security-policy"]


async def test_a_forged_or_expired_session_is_refused(svc: RunningService) -> None:
    sessions = Sessions(TOKEN.encode())
    good = sessions.issue("alice", time.time()).value
    issued, name, mac = good.split(".")
    forged = {
        "mac changed": f"{issued}.{name}.{'0' * 64}",
        "name changed": f"{issued}.{'bWFsbG9yeQ'}.{mac}",
        "issued changed": f"{int(issued) + 1}.{name}.{mac}",
        "expired": sessions.issue("alice", time.time() - 13 * 3600).value,
        "made with another token": Sessions(b"guess").issue("alice", time.time()).value,
        "garbage": "not-a-session",
    }
    for why, value in forged.items():
        async with httpx.AsyncClient(base_url=svc.url, cookies={COOKIE: value}) as client:
            resp = await client.get("/ui/")
            assert (resp.status_code, resp.headers.get("location")) == (303, "/ui/login"), why
    async with httpx.AsyncClient(base_url=svc.url, cookies={COOKIE: good}) as client:
        assert (await client.get("/ui/")).status_code == 200


async def test_the_api_still_asks_for_the_bearer_token(browser: httpx.AsyncClient) -> None:
    await log_in(browser)
    # The session cookie is scoped to /ui and is no API credential anyway.
    resp = await browser.get("/api/v1/incidents", headers={"cookie": f"{COOKIE}={browser.cookies[COOKIE]}"})
    assert resp.status_code == 401


async def test_a_form_without_the_right_csrf_token_or_origin_is_refused_and_changes_nothing(
    svc: RunningService, browser: httpx.AsyncClient
) -> None:
    inc = await open_incident(svc, "ApiDown", token=TOKEN, namespace="csrf")
    csrf = await log_in(browser)
    async with httpx.AsyncClient(base_url=svc.url) as other:
        other_csrf = await log_in(other, "bob")  # a valid token, of another session
    assert other_csrf != csrf
    url = f"/ui/incidents/{inc}/ack"
    attempts = {
        "no token": ({"next": "/ui/"}, {}),
        "wrong token": ({"csrf": "f" * 64}, {}),
        "another session's token": ({"csrf": other_csrf}, {}),
        "cross-origin": ({"csrf": csrf}, {"origin": "http://evil.example"}),
        "opaque origin": ({"csrf": csrf}, {"origin": "null"}),
        "cross-site fetch": ({"csrf": csrf}, {"sec-fetch-site": "cross-site"}),
    }
    for why, (data, headers) in attempts.items():
        resp = await browser.post(url, data=data, headers=headers)
        assert resp.status_code == 403, why
        assert "refused" in resp.text and "Traceback" not in resp.text, why
    pause = await browser.post("/ui/remediation/pause", data={"reason": "x"})
    assert pause.status_code == 403
    logout = await browser.post("/ui/logout", data={"next": "/ui/"})
    assert logout.status_code == 403
    assert (await incident(svc, inc))["incident"]["acknowledged_at"] is None
    state = (await svc.client.get(f"{svc.url}/api/v1/remediation", headers=BEARER)).json()
    assert state["pause"]["paused"] is False
    assert (await browser.get("/ui/")).status_code == 200  # still logged in


async def test_forms_apply_the_commands_through_the_same_handler(
    svc: RunningService, browser: httpx.AsyncClient
) -> None:
    inc = await open_incident(svc, "ApiDown", token=TOKEN, namespace="forms")
    csrf = await log_in(browser, "alice")
    base = f"/ui/incidents/{inc}"

    ack = await browser.post(f"{base}/ack", data={"csrf": csrf}, headers={"origin": svc.url})
    assert (ack.status_code, ack.headers["location"]) == (303, base)
    snap = (await incident(svc, inc))["incident"]
    assert snap["acknowledged_by"] == "alice"  # signed with the session's name
    await svc.events.wait_for(
        lambda _: any(e["subject"] == inc for e in svc.events.of_type("incident.acknowledged"))
    )
    [acked] = [e for e in svc.events.of_type("incident.acknowledged") if e["subject"] == inc]
    assert acked["data"]["command"] == {"command": "ack", "by": "alice", "source": "ui"}

    assign = await browser.post(f"{base}/assign", data={"csrf": csrf, "role": "IC", "who": "carol"})
    assert assign.status_code == 303
    assert (await incident(svc, inc))["incident"]["roles"] == {"Incident Commander": "carol"}

    # ``next`` brings the board back; a ``next`` off the board is ignored (no open redirect).
    resolve = await browser.post(
        f"{base}/resolve", data={"csrf": csrf, "note": "rolled back", "next": "https://evil.example/"}
    )
    assert (resolve.status_code, resolve.headers["location"]) == (303, base)
    assert (await incident(svc, inc))["incident"]["status"] == "resolved"

    page = await browser.get(base)
    assert page.status_code == 200
    for shown in ("incident.opened", "incident.acknowledged", "incident.resolved", "carol", "console"):
        assert shown in page.text, shown

    conflict = await browser.post(f"{base}/ack", data={"csrf": csrf})
    assert conflict.status_code == 409 and "resolved" in conflict.text
    assert conflict.headers["content-type"].startswith("text/html")


async def test_bad_input_is_a_4xx_page_naming_the_problem_never_a_traceback(
    svc: RunningService, browser: httpx.AsyncClient
) -> None:
    inc = await open_incident(svc, "ApiDown", token=TOKEN, namespace="badinput")
    csrf = await log_in(browser)
    base = f"/ui/incidents/{inc}"
    cases = [
        (f"{base}/assign", {"role": "CEO", "who": "x"}, 422, "role"),
        (f"{base}/assign", {"role": "IC"}, 422, "who"),
        (f"{base}/note", {"text": "a\x00b"}, 422, "NUL"),
        (f"{base}/explode", {}, 404, "no such form"),
        ("/ui/incidents/inc-does-not-exist/ack", {}, 404, "no incident"),
        ("/ui/remediation/rem-00000000000000000000/approve", {}, 404, "no remediation"),
        ("/ui/remediation/not-an-id/deny", {}, 422, "remediation_id"),
    ]
    for url, data, status, says in cases:
        resp = await browser.post(url, data={"csrf": csrf, **data})
        assert resp.status_code == status, (url, resp.text)
        assert says in resp.text and "Traceback" not in resp.text, url
    not_a_form = await browser.post(
        f"{base}/ack", content=b'{"csrf": "x"}', headers={"content-type": "application/json"}
    )
    assert not_a_form.status_code == 415
    missing = await browser.get("/ui/incidents/inc-does-not-exist")
    assert missing.status_code == 404 and "no incident" in missing.text
    assert (await incident(svc, inc))["incident"]["roles"] == {}


async def test_the_board_lists_open_incidents_by_severity_with_their_response_clocks(
    svc: RunningService, browser: httpx.AsyncClient
) -> None:
    slow = await open_incident(svc, "SlowResponses", token=TOKEN, namespace="board")
    down = await open_incident(svc, "ApiDown", token=TOKEN, namespace="board")
    await log_in(browser)
    live = (await browser.get("/ui/live")).text
    assert live.index('id="inc-' + down) < live.index('id="inc-' + slow)  # SEV-1 before SEV-3
    assert live.index(">SEV-1 <") < live.index(">SEV-3 <")
    snap = (await incident(svc, down))["incident"]
    card = live[live.index('id="inc-' + down) :]
    assert 'class="clock running" data-due="' in card[: card.index("</article>")]
    assert snap["response_due_at"]
    assert "Acknowledge" in card[: card.index("</article>")]


async def test_pause_and_resume_automation_from_the_board(
    svc: RunningService, browser: httpx.AsyncClient
) -> None:
    csrf = await log_in(browser, "dave")
    resp = await browser.post("/ui/remediation/pause", data={"csrf": csrf, "reason": "game day"})
    assert (resp.status_code, resp.headers["location"]) == (303, "/ui/")
    state = (await svc.client.get(f"{svc.url}/api/v1/remediation", headers=BEARER)).json()
    assert state["paused"] is True and state["pause"]["paused_by"] == "dave"
    assert state["pause"]["reason"] == "game day"
    board = (await browser.get("/ui/")).text
    assert "Resume automation" in board and "game day" in board
    resp = await browser.post("/ui/remediation/resume", data={"csrf": csrf})
    assert resp.status_code == 303
    state = (await svc.client.get(f"{svc.url}/api/v1/remediation", headers=BEARER)).json()
    assert state["paused"] is False
    unheld = await browser.post("/ui/remediation/resume", data={"csrf": csrf, "target": "deployment/x/y"})
    assert unheld.status_code == 404 and "not stopped" in unheld.text


async def test_logout_ends_the_session(browser: httpx.AsyncClient) -> None:
    csrf = await log_in(browser)
    resp = await browser.post("/ui/logout", data={"csrf": csrf})
    assert (resp.status_code, resp.headers["location"]) == (303, "/ui/login")
    assert COOKIE not in browser.cookies
    assert (await browser.get("/ui/")).status_code == 303


async def test_without_a_token_the_board_is_open_and_still_checks_csrf(
    kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = test_settings(kafka, tmp_path_factory.mktemp("board-open"))
    async with run_service(settings) as svc, httpx.AsyncClient(base_url=svc.url) as client:
        inc = await open_incident(svc, "ApiDown", namespace="open")
        board = await client.get("/ui/")
        assert board.status_code == 200 and COOKIE in client.cookies  # a session, no login
        csrf = csrf_of(board.text)
        refused = await client.post(f"/ui/incidents/{inc}/ack", data={"csrf": "0" * 64})
        assert refused.status_code == 403
        assert (await svc.client.get(f"{svc.url}/api/v1/incidents/{inc}")).json()["incident"][
            "acknowledged_at"
        ] is None
        # Another browser's cookie and token do not fit this one's.
        async with httpx.AsyncClient(base_url=svc.url) as other:
            other_csrf = csrf_of((await other.get("/ui/")).text)
        assert (await client.post(f"/ui/incidents/{inc}/ack", data={"csrf": other_csrf})).status_code == 403
        done = await client.post(f"/ui/incidents/{inc}/ack", data={"csrf": csrf})
        assert done.status_code == 303
        snap = (await svc.client.get(f"{svc.url}/api/v1/incidents/{inc}")).json()["incident"]
        assert snap["acknowledged_by"] == "ui"


async def test_status_note_update_severity_and_escalate_forms(
    svc: RunningService, browser: httpx.AsyncClient
) -> None:
    inc = await open_incident(svc, "SlowResponses", token=TOKEN, namespace="more-forms")
    csrf = await log_in(browser, "erin")
    base = f"/ui/incidents/{inc}"
    forms = [
        ("status", {"phase": "identified", "root_cause": "bad deploy of api v2", "eta": "15:30 UTC"}),
        ("note", {"text": "rolled back api to v1"}),
        ("update", {"text": "recovering"}),
        ("severity", {"severity": "SEV-2", "reason": "checkout affected"}),
        ("escalate", {"roles": "Engineering Lead, CTO", "reason": "needs a decision"}),
    ]
    for action, data in forms:
        resp = await browser.post(f"{base}/{action}", data={"csrf": csrf, **data})
        assert (resp.status_code, resp.headers.get("location")) == (303, base), (action, resp.text)
    shown = await incident(svc, inc)
    snap = shown["incident"]
    assert (snap["phase"], snap["root_cause"], snap["eta"]) == (
        "identified",
        "bad deploy of api v2",
        "15:30 UTC",
    )
    assert snap["severity"] == "SEV-2"
    page = (await browser.get(base)).text
    for text in ("bad deploy of api v2", "15:30 UTC", "identified", "rolled back api to v1"):
        assert text in page, text
    # An empty optional field is an absent one; a missing required one is named.
    bad = await browser.post(f"{base}/status", data={"csrf": csrf, "phase": "sleeping"})
    assert bad.status_code == 422 and "phase" in bad.text
    wrong_severity = await browser.post(f"{base}/severity", data={"csrf": csrf, "severity": "SEV-9"})
    assert wrong_severity.status_code == 422 and "severity must be one of" in wrong_severity.text
    no_roles = await browser.post(f"{base}/escalate", data={"csrf": csrf, "roles": " , ", "reason": "x"})
    assert no_roles.status_code == 422 and "roles" in no_roles.text


async def test_a_form_posted_twice_is_applied_once(svc: RunningService, browser: httpx.AsyncClient) -> None:
    inc = await open_incident(svc, "DoubleClick", token=TOKEN, namespace="twice")
    csrf = await log_in(browser, "gina")
    page = (await browser.get(f"/ui/incidents/{inc}")).text
    onces = re.findall(r'name="once" value="([0-9a-f]{32})"', page)
    assert len(onces) == len(set(onces)) > 1  # one id per form as rendered
    form = {"csrf": csrf, "once": onces[0], "text": "checked the replica"}
    for _ in range(2):  # a double click
        resp = await browser.post(f"/ui/incidents/{inc}/note", data=form)
        assert resp.status_code == 303
    again = await browser.post(f"/ui/incidents/{inc}/note", data={**form, "once": onces[1]})
    assert again.status_code == 303  # a new rendering of the form is a new note
    timeline = (await incident(svc, inc))["timeline"]
    notes = [t for t in timeline if "note by gina via ui: checked the replica" in t["summary"]]
    assert len(notes) == 2


async def test_declare_an_incident_from_the_board(svc: RunningService, browser: httpx.AsyncClient) -> None:
    csrf = await log_in(browser, "frank")
    assert 'action="/ui/declare"' in (await browser.get("/ui/")).text
    data = {"csrf": csrf, "title": "Checkout errors reported by support", "severity": "SEV-2", "impact": ""}
    resp = await browser.post("/ui/declare", data=data)
    assert resp.status_code == 303 and resp.headers["location"].startswith("/ui/incidents/inc-")
    inc = resp.headers["location"].rsplit("/", 1)[1]
    snap = (await incident(svc, inc))["incident"]
    assert (snap["title"], snap["severity"], snap["declared_by"]) == (data["title"], "SEV-2", "frank")
    assert "Checkout errors reported by support" in (await browser.get("/ui/")).text
    bad = await browser.post("/ui/declare", data={"csrf": csrf, "title": "", "severity": "SEV-2"})
    assert bad.status_code == 422 and "title" in bad.text
    forged = await browser.post("/ui/declare", data={"csrf": "nope", "title": "x", "severity": "SEV-2"})
    assert forged.status_code == 403


def test_the_response_clock_runs_goes_overdue_and_stops() -> None:
    from datetime import timedelta

    from service.http.ui.render import clock
    from tests.support.incidents import make_incident
    from tests.support.time import T0

    inc = make_incident(at=T0)  # SEV-1, 15 minutes to respond
    running = clock(inc, T0 + timedelta(minutes=5))
    assert (running["state"], running["text"]) == ("running", "10:00 left")
    assert running["due_ms"] == int((T0 + timedelta(minutes=15)).timestamp() * 1000)
    late = clock(inc, T0 + timedelta(hours=1, minutes=17, seconds=3))
    assert (late["state"], late["text"]) == ("overdue", "overdue 1:02:03")
    inc.acknowledged_at, inc.acknowledged_by = T0 + timedelta(minutes=3, seconds=7), "alice"
    stopped = clock(inc, T0 + timedelta(hours=2))
    assert stopped == {"state": "stopped", "text": "acknowledged by alice after 3:07"}
