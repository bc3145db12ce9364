"""The incident board in a real browser: Debian's chromium driven by Playwright.

Log in with the token, see an incident appear after a webhook (htmx polling), its
response clock counting down, acknowledge it with a click, see the clock stop. Every
wait is Playwright's (``expect`` retries until true); nothing sleeps.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from tests.support.browser import ShiftedClock, chromium_missing, launch_options, open_incident
from tests.support.service import RunningService, run_service, test_settings

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))

TOKEN = "board-browser-token-42"
# Incidents open 20 minutes in the past: a SEV-1 (15 m to respond) is overdue at once, a
# SEV-2 (30 m) has about 10 minutes left.
BEHIND = timedelta(minutes=20)
RED = "rgb(180, 35, 24)"  # --sev1 in board.css


@pytest.fixture
async def svc(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningService]:
    settings = test_settings(kafka, tmp_path_factory.mktemp("board-browser"), webhook_token=TOKEN)
    async with run_service(settings, clock=ShiftedClock(BEHIND)) as running:
        yield running


def seconds(clock_text: str) -> int:
    """``9:58 left`` -> 598."""
    found = re.search(r"(\d+):(\d\d)", clock_text)
    assert found, clock_text
    return int(found.group(1)) * 60 + int(found.group(2))


async def test_log_in_see_an_incident_arrive_acknowledge_it_and_its_clock_stops(svc: RunningService) -> None:
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(**launch_options())
        try:
            page = await browser.new_page()
            await page.goto(f"{svc.url}/ui/")
            await expect(page).to_have_url(f"{svc.url}/ui/login")  # no session: the login form

            await page.get_by_label("API token").fill("wrong")
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_role("alert")).to_have_text("Wrong token.")
            await page.get_by_label("API token").fill(TOKEN)
            await page.get_by_label("Your name").fill("alice")
            await page.get_by_role("button", name="Log in").click()
            await expect(page).to_have_url(f"{svc.url}/ui/")
            await expect(page.get_by_text("No open incidents.")).to_be_visible()

            # Webhooks after the page loaded: the board shows them without a reload.
            overdue = await open_incident(svc, "ApiDown", token=TOKEN, namespace="shop")
            inc = await open_incident(svc, "AuthBroken", token=TOKEN, namespace="shop")
            card = page.locator(f"#inc-{inc}")
            await expect(card).to_be_visible(timeout=20_000)
            await expect(card.locator(".badge")).to_have_text("SEV-2")

            # Its response clock counts down, by the second.
            clock = card.locator(".clock")
            await expect(clock).to_have_class(re.compile(r"\brunning\b"))
            await expect(clock).to_have_text(re.compile(r"^\d+:\d\d left$"))
            before = await clock.text_content()
            assert before is not None and 8 * 60 < seconds(before) <= 10 * 60
            await expect(clock).not_to_have_text(before)
            after = await clock.text_content()
            assert after is not None and seconds(after) < seconds(before)

            # The SEV-1, past its 15 minutes, is overdue and red, above the SEV-2.
            red = page.locator(f"#inc-{overdue} .clock")
            await expect(red).to_have_text(re.compile(r"^overdue \d+:\d\d$"))
            await expect(red).to_have_css("background-color", RED)
            # Read in one go in the page: the live board may swap the cards between two reads.
            await page.wait_for_function(
                """([above, below]) => {
                    const a = document.getElementById(above), b = document.getElementById(below);
                    return a && b && a.getBoundingClientRect().top < b.getBoundingClientRect().top;
                }""",
                arg=[f"inc-{overdue}", f"inc-{inc}"],
                timeout=10_000,
            )

            await card.get_by_role("button", name="Acknowledge").click()

            # The clock stops: it says who acknowledged, and no longer counts.
            await expect(clock).to_have_text(re.compile(r"^acknowledged by alice after \d+:\d\d$"))
            await expect(clock).to_have_class(re.compile(r"\bstopped\b"))
            await expect(clock).not_to_have_attribute("data-due", re.compile(".*"))
            await expect(card.get_by_role("button", name="Acknowledge")).to_have_count(0)
            stopped = await clock.text_content()
            async with page.expect_response(lambda r: r.url.endswith("/ui/live")):
                pass  # the next refresh of the board (every 2 s) ...
            await expect(clock).to_have_text(stopped or "")  # ... shows the same stopped clock
            await expect(red).to_have_class(re.compile(r"\boverdue\b"))  # the other one still runs

            shown = (
                await svc.client.get(
                    f"{svc.url}/api/v1/incidents/{inc}", headers={"authorization": f"Bearer {TOKEN}"}
                )
            ).json()
            assert shown["incident"]["acknowledged_by"] == "alice"
        finally:
            await browser.close()
