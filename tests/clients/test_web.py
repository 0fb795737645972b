"""The web client: a static page that only changes when it is loaded again."""

from __future__ import annotations

import pytest

from recall_lab.harness.clients.web import MessageGone, WebClient
from tests.clients.conftest import Mailbox, MailServer, make_message, new_mid


def web(server: MailServer, tmp_path) -> WebClient:
    return WebClient(server.user, server.password, server.imap, tmp_path / "state")


async def test_page_load_lists_subject_sender_and_preview_without_reading(server, other: Mailbox, tmp_path):
    mid = new_mid()
    await other.append(make_message(mid, subject="Budget", body="\nFirst things first.\nMore.\n"))
    client = web(server, tmp_path)
    [entry] = await client.page_load()
    assert (entry.subject, entry.sender, entry.preview, entry.seen) == (
        "Budget", "alice@corp.example", "First things first.", False)
    assert client.preview(mid).first_line == "First things first."
    assert "\\Seen" not in await other.flags(mid)  # BODY.PEEK: the list does not mark anything read
    assert "Budget" in client.index_path.read_text()


async def test_open_marks_seen_and_renders_an_escaped_snapshot(server, other: Mailbox, tmp_path):
    mid = new_mid()
    await other.append(make_message(mid, subject="<script>alert(1)</script>", body="a < b & c\n"))
    client = web(server, tmp_path)
    await client.page_load()
    path = await client.open(mid)
    html = path.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "a &lt; b &amp; c" in html
    assert "\\Seen" in await other.flags(mid)
    assert "<script>" not in client.index_path.read_text()


async def test_snapshot_stays_until_the_next_page_load(server, other: Mailbox, tmp_path):
    mid = new_mid()
    await other.append(make_message(mid))
    client = web(server, tmp_path)
    await client.page_load()
    await client.open(mid)
    await other.expunge(mid)  # the recall removes the server copy
    assert client.snapshot_visible(mid) and client.has_message_id(mid)  # the page still shows it
    await client.page_load()
    assert not client.snapshot_visible(mid) and not client.has_message_id(mid)


async def test_opened_state_survives_a_new_client_object(server, other: Mailbox, tmp_path):
    mid = new_mid()
    await other.append(make_message(mid))
    first = web(server, tmp_path)
    await first.page_load()
    await first.open(mid)
    first.snapshot_path(mid).unlink()
    second = web(server, tmp_path)
    await second.page_load()  # re-renders what the user had open
    assert second.snapshot_visible(mid)


async def test_opening_a_message_gone_from_the_server(server, other: Mailbox, tmp_path):
    mid = new_mid()
    await other.append(make_message(mid))
    client = web(server, tmp_path)
    await client.page_load()
    await other.expunge(mid)
    with pytest.raises(MessageGone):
        await client.open(mid)


async def test_web_client_never_processes_recalls(legacy_lab, tmp_path):
    from tests.clients.test_legacy_recall import BOB, send_original, send_recall

    mid = new_mid()
    await send_original(legacy_lab, mid)
    await send_recall(legacy_lab, mid)
    await legacy_lab.wait_idle()
    client = WebClient(BOB, "bob-password", legacy_lab.imap("corp.example"), tmp_path)
    entries = await client.page_load()
    assert client.has_message_id(mid)
    assert any(e.subject.startswith("Recall:") for e in entries)
    assert legacy_lab.store("corp.example").find_by_message_id(BOB, mid)


async def test_empty_folder(server, tmp_path):
    client = web(server, tmp_path)
    assert await client.page_load() == []


async def test_subject_with_an_asterisk_survives(server, other: Mailbox, tmp_path):
    mid = new_mid()
    await other.append(make_message(mid, subject="Re: * urgent * figures"))
    [entry] = await web(server, tmp_path).page_load()
    assert entry.subject == "Re: * urgent * figures"
