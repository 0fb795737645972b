"""The web client: a browser on the lab's webmail (static view), whose page only changes when it is loaded again.

`server` runs each test against the lab's IMAP server and against Dovecot: with Dovecot, the lab's webmail is
pointed at it (the webmail is an IMAP client, so it works with any IMAP server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from recall_lab.harness.clients.web import MessageGone, WebClient, WebClientError
from tests.clients.conftest import Mailbox, MailServer, make_message, new_mid


@pytest.fixture
async def web_url(server: MailServer) -> AsyncIterator[str]:
    if server.lab is not None:
        yield server.lab.web.url
        return
    from recall_lab.harness.lab import Lab
    from recall_lab.harness.web.webmail import WEBMAIL_KEY

    async with Lab(store="memory") as lab:
        lab.web.app[WEBMAIL_KEY].imap_endpoint = lambda user: server.imap
        yield lab.web.url


def web(server: MailServer, web_url: str, tmp_path) -> WebClient:
    return WebClient(server.user, server.password, web_url, tmp_path / "state")


async def test_page_load_lists_subject_sender_and_preview_without_reading(server, web_url, other: Mailbox,
                                                                         tmp_path):
    mid = new_mid()
    await other.append(make_message(mid, subject="Budget", body="\nFirst things first.\nMore.\n"))
    client = web(server, web_url, tmp_path)
    [entry] = await client.page_load()
    assert (entry.subject, entry.sender, entry.preview, entry.seen, entry.message_id) == (
        "Budget", "alice@corp.example", "First things first.", False, mid)
    assert client.preview(mid).first_line == "First things first."
    assert "\\Seen" not in await other.flags(mid)  # BODY.PEEK: the list does not mark anything read
    page = client.index_path.read_text()
    assert "Budget" in page and f'data-uid="{entry.uid}"' in page and "<script" not in page
    assert client.page_loads == 1


async def test_open_marks_seen_and_keeps_the_escaped_page(server, web_url, other: Mailbox, tmp_path):
    mid = new_mid()
    await other.append(make_message(mid, subject="<script>alert(1)</script>", body="a < b & c\n"))
    client = web(server, web_url, tmp_path)
    await client.page_load()
    path = await client.open(mid)
    html = path.read_text()
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "a &lt; b &amp; c" in html
    assert "\\Seen" in await other.flags(mid)
    assert client.listing[0].seen
    assert "<script" not in client.index_path.read_text()


async def test_snapshot_stays_until_the_next_page_load(server, web_url, other: Mailbox, tmp_path):
    mid = new_mid()
    await other.append(make_message(mid))
    client = web(server, web_url, tmp_path)
    await client.page_load()
    await client.open(mid)
    await other.expunge(mid)  # the recall removes the server copy
    assert client.snapshot_visible(mid) and client.has_message_id(mid)  # the page still shows it
    await client.page_load()
    assert not client.snapshot_visible(mid) and not client.has_message_id(mid)


async def test_opened_state_survives_a_new_client_object(server, web_url, other: Mailbox, tmp_path):
    mid = new_mid()
    await other.append(make_message(mid))
    first = web(server, web_url, tmp_path)
    await first.page_load()
    await first.open(mid)
    await other.expunge(mid)
    second = web(server, web_url, tmp_path)
    assert second.snapshot_visible(mid)  # the page on disk, as the first object left it
    await second.page_load()  # knows what the user had open, so drops the snapshot of what is gone
    assert not second.snapshot_visible(mid)


async def test_opening_a_message_gone_from_the_server(server, web_url, other: Mailbox, tmp_path):
    mid = new_mid()
    await other.append(make_message(mid))
    client = web(server, web_url, tmp_path)
    await client.page_load()
    await other.expunge(mid)
    with pytest.raises(MessageGone):
        await client.open(mid)  # the old link: "item not found"
    with pytest.raises(MessageGone):
        await client.open(new_mid())  # never listed: looked up by Message-ID


async def test_move_posts_the_webmail_form(server, web_url, other: Mailbox, tmp_path):
    mid = new_mid()
    await other.create("Later")
    await other.append(make_message(mid))
    client = web(server, web_url, tmp_path)
    await client.page_load()
    await client.move(mid, "Later")
    assert await other.uids(mid, "Later")
    assert client.in_listing(mid)  # the page shows it until it is loaded again
    await client.page_load()
    assert not client.in_listing(mid)
    with pytest.raises(MessageGone):
        await client.move(mid, "Later")


async def test_a_wrong_password_is_a_clear_error(server, web_url, tmp_path):
    client = WebClient(server.user, "not-the-password", web_url, tmp_path)
    with pytest.raises(WebClientError, match="refused the login"):
        await client.page_load()


async def test_web_client_never_processes_recalls(legacy_lab, tmp_path):
    from tests.clients.test_legacy_recall import BOB, send_original, send_recall

    mid = new_mid()
    await send_original(legacy_lab, mid)
    await send_recall(legacy_lab, mid)
    await legacy_lab.wait_idle()
    client = WebClient(BOB, "bob-password", legacy_lab.web.url, tmp_path)
    entries = await client.page_load()
    assert client.has_message_id(mid)
    assert any(e.subject.startswith("Recall:") for e in entries)
    assert legacy_lab.store("corp.example").find_by_message_id(BOB, mid)


async def test_empty_folder(server, web_url, tmp_path):
    client = web(server, web_url, tmp_path)
    assert await client.page_load() == []


async def test_subject_with_an_asterisk_survives(server, web_url, other: Mailbox, tmp_path):
    mid = new_mid()
    await other.append(make_message(mid, subject="Re: * urgent * figures"))
    [entry] = await web(server, web_url, tmp_path).page_load()
    assert entry.subject == "Re: * urgent * figures"
