"""The webmail in a real browser (Chromium through Playwright): what a person sees before and after a recall.

The story: bob has the webmail open twice, a static page and a live page (two browser profiles); alice sends
him a message over SMTP; both show it (the static one once reloaded, the live one by itself); bob opens it in
both; alice recalls it (cloud mode, corp.example's default). The live pages drop it and say it was recalled
within a second of the server removing it; the static page keeps showing what it rendered until reloaded, and
then the message is gone and its old link says "item not found".
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import aiosmtplib
import pytest
import pytest_asyncio

from recall_lab.harness.lab import Lab
from recall_lab.harness.own_name import client_name
from recall_lab.harness.recall_agent import RecallAgent

pytest.importorskip("playwright", reason="playwright is not installed")
from playwright.async_api import expect  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="session")

ALICE, BOB = "alice@corp.example", "bob@corp.example"


@pytest_asyncio.fixture(loop_scope="session")
async def lab() -> AsyncIterator[Lab]:
    async with Lab(store="memory") as running:
        yield running


async def send(lab: Lab, subject: str, body: str = "plain part\n", html: str | None = None) -> str:
    """alice -> bob over SMTP submission; returns once it is in bob's INBOX."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ALICE, BOB, subject
    msg["Message-ID"] = make_msgid(domain=client_name(ALICE))
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    endpoint = lab.submission("corp.example")
    await aiosmtplib.send(msg, hostname=endpoint.host, port=endpoint.port, username=ALICE,
                          password="alice-password", start_tls=False, local_hostname=client_name(ALICE))
    await lab.wait_idle()
    mid = str(msg["Message-ID"])
    assert lab.store("corp.example").find_by_message_id(BOB, mid)
    return mid


async def log_in(page: Any, lab: Lab, view: str, password: str = "bob-password") -> Any:
    await page.goto(f"{lab.web.url}/mail/")
    await page.fill("input[name=address]", BOB)
    await page.fill("input[name=password]", password)
    await page.check(f"input[name=view][value={view}]")
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    return page


async def badge_follows_the_store(page: Any, lab: Lab) -> None:
    """The live page's INBOX unread badge says what the server says, without a reload."""
    unseen = lab.store("corp.example").mailbox(BOB, "INBOX").unseen
    badge = page.locator('nav.folders li[data-folder="INBOX"] .unread-count')
    if unseen:
        await expect(badge).to_have_text(str(unseen), timeout=1000)
    else:
        await expect(badge).to_have_count(0, timeout=1000)


def row(message_id: str) -> str:
    return f'li.msg[data-message-id="{message_id}"]'


async def live_ready(page: Any) -> None:
    """The live page's stream has said "ready" (its IMAP connection is selected and in IDLE)."""
    await expect(page.locator("#live-status")).to_have_class(re.compile(r"\blive\b"), timeout=5000)


async def test_a_recall_seen_from_a_static_and_a_live_page(lab: Lab, pages) -> None:
    static = await log_in(await pages(), lab, "static")
    live = await log_in(await pages(), lab, "live")
    live_list = await pages(live.context)  # a second tab of the live profile keeps the list in view
    await live_list.goto(f"{lab.web.url}/mail/?folder=INBOX&view=live")
    await live_ready(live)
    await live_ready(live_list)

    mid = await send(lab, "Q3 numbers", "Draft figures: 42 million\n")
    await expect(live.locator(row(mid))).to_have_count(1, timeout=5000)  # the live page, by itself
    await expect(live_list.locator(row(mid))).to_have_count(1, timeout=5000)
    await badge_follows_the_store(live_list, lab)
    await expect(static.locator(row(mid))).to_have_count(0)  # the static page, not until reloaded
    await static.reload()
    await expect(static.locator(row(mid) + " .subject")).to_have_text("Q3 numbers")

    await static.click(row(mid) + " a")
    await expect(static.locator("#message pre.body")).to_contain_text("Draft figures: 42 million")
    opened_link = static.url
    await live.click(row(mid) + " a")
    await expect(live.locator("#message pre.body")).to_contain_text("Draft figures: 42 million")
    await live_ready(live)
    [location] = lab.store("corp.example").find_by_message_id(BOB, mid)
    assert "\\Seen" in lab.store("corp.example").get(BOB, "INBOX", location.uid).flags
    await badge_follows_the_store(live_list, lab)

    await RecallAgent(lab, ALICE, "alice-password").recall(mid)
    await lab.wait_idle()  # the recall is processed: from here the live pages have one second
    assert not lab.store("corp.example").find_by_message_id(BOB, mid)
    await expect(live.locator("#message p.recalled")).to_have_text("This message was recalled by the sender",
                                                                   timeout=1000)
    await expect(live.locator("#message pre.body")).to_have_count(0, timeout=1000)
    await expect(live_list.locator(row(mid))).to_have_count(0, timeout=1000)
    await badge_follows_the_store(live_list, lab)

    # the static page still shows what it rendered, until it is reloaded
    await expect(static.locator("#message .subject")).to_have_text("Q3 numbers")
    await expect(static.locator("#message pre.body")).to_contain_text("Draft figures: 42 million")
    await static.goto(f"{lab.web.url}/mail/?folder=INBOX&view=static")
    await expect(static.locator("#messages")).to_have_count(1)
    await expect(static.locator(row(mid))).to_have_count(0)
    response = await static.goto(opened_link)
    assert response is not None and response.status == 404
    await expect(static.locator("h1")).to_have_text("Item not found")


async def test_login_errors_show_one_clear_message(lab: Lab, pages) -> None:
    page = await pages()
    await page.goto(f"{lab.web.url}/mail/")
    await page.fill("input[name=address]", BOB)
    await page.fill("input[name=password]", "not-bob's")
    async with page.expect_navigation() as navigation:
        await page.click("button[type=submit]")
    assert (await navigation.value).status == 401
    await expect(page.locator("[role=alert]")).to_have_text("Wrong address or password.")
    await expect(page.locator("#messages")).to_have_count(0)
    await log_in(page, lab, "static")
    await expect(page.locator("#messages")).to_have_count(1)
    await expect(page.locator("[role=alert]")).to_have_count(0)


async def test_hostile_subject_and_html_body_render_inert(lab: Lab, pages) -> None:
    subject = '<script>alert("subject")</script> <img src=x onerror=alert(1)>'
    mid = await send(lab, subject)
    html_mid = await send(lab, "HTML mail", html=(
        '<p>Quarterly <b>figures</b></p><script>alert("script")</script>'
        '<img src="https://tracker.example/pixel.gif" onerror="alert(\'onerror\')">'
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">'
        '<a href="https://example.com/report">report</a>'))
    for view in ("static", "live"):
        page = await log_in(await pages(), lab, view)
        dialogs: list[str] = []

        async def on_dialog(dialog: Any, seen: list[str] = dialogs) -> None:
            seen.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        await expect(page.locator(row(mid) + " .subject")).to_have_text(subject)
        await page.click(row(mid) + " a")
        await expect(page.locator("#message h1.subject")).to_have_text(subject)
        await page.goto(f"{lab.web.url}/mail/?folder=INBOX&view={view}")
        await page.click(row(html_mid) + " a")
        body = page.locator("#message .body.html")
        await expect(body.locator("b")).to_have_text("figures")
        await expect(body.locator("script")).to_have_count(0)
        await expect(body.locator("[onerror]")).to_have_count(0)
        images = body.locator("img")
        await expect(images).to_have_count(2)
        assert await images.nth(0).get_attribute("src") is None  # the remote one
        assert (await images.nth(1).get_attribute("src") or "").startswith("data:image/gif")
        assert await body.locator("a").get_attribute("rel") == "noopener noreferrer"
        assert dialogs == [], dialogs
