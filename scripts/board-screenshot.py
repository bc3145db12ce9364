#!/usr/bin/env python
"""Take docs/board.png: the real service on the bundled broker, four incidents opened
through the webhook (clocks started 20 minutes ago, so the SEV-1 is overdue), one
acknowledged with a role assigned, and the board in Debian's chromium.

    .venv/bin/python scripts/board-screenshot.py [OUT.png]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.async_api import async_playwright, expect  # noqa: E402

from service.embedded.broker import embedded_broker  # noqa: E402
from tests.support.browser import ShiftedClock, launch_options, open_incident  # noqa: E402
from tests.support.service import free_port, run_service, test_settings  # noqa: E402

TOKEN = "screenshot-token"


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bootstrap = f"127.0.0.1:{free_port()}"
        async with embedded_broker(bootstrap, Path(tmp) / "broker.log"):
            settings = test_settings(bootstrap, Path(tmp), webhook_token=TOKEN)
            async with run_service(settings, clock=ShiftedClock(timedelta(minutes=20))) as svc:
                await open_incident(svc, "ApiDown", token=TOKEN, namespace="checkout")
                await open_incident(svc, "AuthBroken", token=TOKEN, namespace="accounts")
                acked = await open_incident(svc, "ConnectorDown", token=TOKEN, namespace="billing")
                await open_incident(svc, "SlowResponses", token=TOKEN, namespace="search")
                api = f"{svc.url}/api/v1/incidents/{acked}"
                auth = {"authorization": f"Bearer {TOKEN}"}
                await svc.client.post(f"{api}/ack", json={"by": "bob"}, headers=auth)
                await svc.client.post(f"{api}/assign", json={"role": "IC", "who": "carol"}, headers=auth)
                await shoot(svc.url, out)


async def shoot(url: str, out: Path) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(**launch_options())
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            await page.goto(f"{url}/ui/login")
            await page.get_by_label("API token").fill(TOKEN)
            await page.get_by_label("Your name").fill("alice")
            await page.get_by_role("button", name="Log in").click()
            await expect(page.locator("article.incident")).to_have_count(4)
            await page.screenshot(path=str(out), full_page=True)
        finally:
            await browser.close()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "board.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(target))
    print(target)
