"""Helpers for the incident board's tests: Debian's chromium under Playwright, and
incidents opened through the real webhook."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from tests.support.payloads import alert, body, webhook
from tests.support.service import RunningService

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = "/usr/bin/chromium"
# The network here is closed: nothing phones home, no QUIC, no GPU, no first-run UI.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} missing (scripts/ensure-system-deps.sh installs Debian's chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright missing (pip install -e '.[dev]')"
    return None


def launch_options() -> dict[str, Any]:
    return {"executable_path": CHROMIUM, "args": CHROMIUM_ARGS, "headless": True}


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def open_incident(svc: RunningService, name: str, token: str | None = None, **labels: str) -> str:
    """Post a firing alert through the webhook; the id of the incident it opened (give
    each call its own ``namespace`` or alertname: those group alerts into incidents)."""
    auth = {"authorization": f"Bearer {token}"} if token else {}
    resp = await svc.post_webhook(body(webhook(alert(name, starts_at=now_rfc3339(), **labels))), **auth)
    assert resp.status_code == 202, resp.text

    def opened() -> list[dict[str, Any]]:
        return [
            e
            for e in svc.events.of_type("incident.opened")
            if e["data"]["group_labels"].get("alertname") == name
            and e["data"]["group_labels"].get("namespace") == labels.get("namespace")
        ]

    await svc.events.wait_for(lambda _: bool(opened()))
    return str(opened()[-1]["data"]["id"])


def csrf_of(html: str) -> str:
    """The CSRF token a rendered board page carries in its forms."""
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


class ShiftedClock:
    """The wall clock, ``behind`` in the past: incidents open with clocks already running
    for that long (an overdue SEV-1 on the board without waiting 15 minutes)."""

    def __init__(self, behind: timedelta) -> None:
        self._behind = behind

    def now(self) -> datetime:
        return datetime.now(UTC) - self._behind


async def log_in(client: httpx.AsyncClient, token: str, who: str) -> str:
    """Log in to the board through its form (``client`` has the service's base URL and
    follows no redirects); the CSRF token of the board it lands on."""
    resp = await client.post("/ui/login", data={"token": token, "who": who})
    assert (resp.status_code, resp.headers.get("location")) == (303, "/ui/"), resp.text
    board = await client.get("/ui/")
    assert board.status_code == 200
    return csrf_of(board.text)


async def log_in_page(page: Page, url: str, token: str, who: str) -> None:
    """Log in to the board in the browser, through the login form."""
    await page.goto(f"{url}/ui/login")
    await page.get_by_label("API token").fill(token)
    await page.get_by_label("Your name").fill(who)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(f"{url}/ui/")


def job_row(html: str, remediation_id: str) -> tuple[str, str] | None:
    """The status class and the HTML of a remediation job's row on a board page, or None."""
    found = re.search(
        rf'<tr class="job (\w+)" id="job-{re.escape(remediation_id)}">(.*?)</tr>', html, re.DOTALL
    )
    return (found.group(1), found.group(2)) if found else None
