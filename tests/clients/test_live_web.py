"""The live web client: the webmail's live view held over its server-sent events, no browser.

Each test waits for the page to agree with the server (an event wakes the waiters); the static client, shown
the same changes, keeps what it rendered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from recall_lab.harness.clients.live_web import LiveWebClient
from recall_lab.harness.clients.web import MessageGone, WebClient, WebClientError
from tests.clients.conftest import Mailbox, make_message, new_mid


@pytest.fixture
async def bob_box(lab) -> AsyncIterator[Mailbox]:
    from recall_lab.harness.clients.connection import ImapConnection

    ep = lab.imap("corp.example")
    box = Mailbox(await ImapConnection(ep.host, ep.port, "bob@corp.example", "bob-password").open())
    yield box
    await box.close()


@pytest.fixture
async def live(lab) -> AsyncIterator[LiveWebClient]:
    client = await LiveWebClient("bob@corp.example", "bob-password", lab.web.url).start()
    yield client
    await client.close()


async def test_new_mail_appears_and_a_removed_message_leaves_at_once(live, bob_box: Mailbox, lab, tmp_path):
    mid = new_mid()
    await bob_box.append(make_message(mid, subject="Q3 numbers", body="draft figures\n"))
    assert await live.wait_until_shown(mid)
    assert live.preview(mid).first_line == "draft figures"
    static = WebClient("bob@corp.example", "bob-password", lab.web.url, tmp_path / "static")
    await static.page_load()
    await bob_box.expunge(mid)
    assert await live.wait_until_gone(mid)
    assert any(event == "vanished" for event, _ in live.events)
    assert static.has_message_id(mid)  # the static page keeps what it rendered until its next load


async def test_an_open_message_is_replaced_by_the_recall_notice(live, bob_box: Mailbox):
    mid = new_mid()
    await bob_box.append(make_message(mid))
    assert await live.wait_until_shown(mid)
    await live.open(mid)
    assert "\\Seen" in await bob_box.flags(mid)
    await bob_box.expunge(mid)
    assert await live.wait_until_gone(mid)
    assert not live.has_message_id(mid) and live.recalled_notices


async def test_opening_what_is_gone_says_item_not_found(live):
    with pytest.raises(MessageGone):
        await live.open(new_mid())


async def test_wait_returns_false_when_the_page_never_agrees(live):
    assert not await live.wait_until_shown(new_mid(), timeout=0.2)


async def test_wrong_password_is_a_clear_error(lab):
    with pytest.raises(WebClientError, match="refused the login"):
        await LiveWebClient("bob@corp.example", "wrong", lab.web.url).start()


async def test_a_start_that_fails_closes_its_http_session(lab):
    """A page whose login fails (a trial that errors) must not leave an open aiohttp session behind."""
    page = LiveWebClient("bob@corp.example", "wrong", lab.web.url)
    with pytest.raises(WebClientError):
        await page.start()
    assert page._http is None  # closed, not left for the garbage collector to warn about
