"""Regenerate the pictures in docs/img/: the lab console and the webmail's static and live views.

    .venv/bin/python scripts/screenshots.py [--out docs/img]

Why a script and not hand-made pictures: the pages change with the code; this walks the same story every time
(alice sends bob three messages, one of them by mistake, and recalls that one in cloud mode) over the lab's
real servers, and photographs the pages with Playwright driving Debian's /usr/bin/chromium (no browser
download). The static view still lists the recalled message (a page rendered before the recall), the live view
has dropped it, and the console shows the whole story, the recall included.

Each step waits for what the page shows (Playwright's own waits), never for a fixed time.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib
from playwright.async_api import Browser, Page, async_playwright

from recall_lab.harness.lab import Lab
from recall_lab.harness.recall_agent import RecallAgent

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 800}
ALICE, BOB, DAVE = "alice@corp.example", "bob@corp.example", "dave@mail.example"
MISTAKE = "Salary review: draft figures"
TIMEOUT_MS = 15_000


async def send(lab: Lab, to: list[str], subject: str, body: str) -> str:
    msg = EmailMessage()
    msg["From"] = f"Alice <{ALICE}>"
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Message-ID"] = mid = make_msgid(domain="corp.example")
    msg.set_content(body)
    ep = lab.submission("corp.example")
    await aiosmtplib.send(msg, hostname=ep.host, port=ep.port, username=ALICE, password=lab.password(ALICE),
                          start_tls=False, timeout=10, local_hostname="localhost")
    await lab.wait_idle()
    return mid


async def webmail(browser: Browser, lab: Lab, user: str, view: str) -> Page:
    """A page logged in to the webmail as `user`, showing the INBOX in `view` (static or live)."""
    page = await browser.new_page(viewport=VIEWPORT)
    await page.goto(f"{lab.web.url}/mail/?view={view}")
    await page.fill("input[name=address]", user)
    await page.fill("input[name=password]", lab.password(user))
    await page.check(f"input[name=view][value={view}]")
    await page.click("button[type=submit]")
    await page.get_by_text(MISTAKE).first.wait_for(timeout=TIMEOUT_MS)
    return page


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    async with Lab(web=True) as lab, async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            console = await browser.new_page(viewport=VIEWPORT)
            await console.goto(lab.web.console_url)
            await console.locator("#live-status[data-state=live]").wait_for(timeout=TIMEOUT_MS)

            await send(lab, [BOB], "Lunch on Friday?", "The usual place at noon?\n")
            await send(lab, [BOB, DAVE], "Q3 plan, final", "Attached to the wiki page; comments welcome.\n")
            mistake = await send(lab, [BOB, DAVE], MISTAKE, "These are not for sharing yet.\n")

            static = await webmail(browser, lab, BOB, "static")
            live = await webmail(browser, lab, BOB, "live")

            agent = RecallAgent(lab, ALICE, lab.password(ALICE), timeout=10)
            handle = await agent.recall(mistake)
            await handle.report(timeout=10)
            await lab.wait_idle()

            # the live view drops the recalled message by itself; the static page, loaded before, still shows it
            await live.get_by_text(MISTAKE).wait_for(state="detached", timeout=TIMEOUT_MS)
            await console.locator(".entry.kind-recall-honoured").first.wait_for(timeout=TIMEOUT_MS)
            await console.locator(".entry.kind-expunged").first.wait_for(timeout=TIMEOUT_MS)
            bob_inbox = console.locator("tr", has=console.locator("td.user", has_text=BOB)) \
                .locator('[data-folder="INBOX"] .exists')
            await bob_inbox.filter(has_text=re.compile(r"^2$")).wait_for(timeout=TIMEOUT_MS)  # the counts caught up

            shots = {"console.png": console, "webmail-static.png": static, "webmail-live.png": live}
            for name, page in shots.items():
                await page.screenshot(path=str(out / name))
                print(f"wrote {out / name}")
        finally:
            await browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder for the PNG files")
    asyncio.run(main(parser.parse_args().out))
