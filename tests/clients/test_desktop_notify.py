"""The desktop client over NOTIFY (RFC 5465): one idling connection hears every mirrored folder, a second one
resynchronises the folder a STATUS line names; without NOTIFY it falls back to one IDLE connection per folder.

The point for recall: a message that a cloud recall removes from a folder no connection idles on (a rule moved
it there) must still leave the cache at once."""

from __future__ import annotations

import time

import pytest

from recall_lab.harness.clients import connection
from recall_lab.harness.clients.desktop import DesktopClient, status_mailbox
from recall_lab.harness.recall_agent import RecallAgent
from tests.clients.conftest import Mailbox, MailServer, make_message, new_mid
from tests.clients.test_legacy_recall import ALICE, BOB, send_original

FOLDERS = ("INBOX", "Projects", "Archive")


def desktop(server: MailServer, **kw) -> DesktopClient:
    return DesktopClient(server.user, server.password, server.imap, **kw)


@pytest.fixture
def no_notify(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server without NOTIFY (as the client sees it): the capability is taken off after login."""
    real_open = connection.ImapConnection.open

    async def open_without_notify(self):
        await real_open(self)
        self.capabilities = self.capabilities - {"NOTIFY"}
        return self

    monkeypatch.setattr(connection.ImapConnection, "open", open_without_notify)


def test_status_mailbox_reads_the_name() -> None:
    assert status_mailbox(b"* STATUS Projects (MESSAGES 2 UIDNEXT 9 UIDVALIDITY 1)") == "Projects"
    assert status_mailbox(b'* STATUS "Deleted Items" (MESSAGES 0)') == "Deleted Items"
    assert status_mailbox(b"* status INBOX (MESSAGES 1)") == "INBOX"
    assert status_mailbox(b"* STATUS {8}") is None  # a literal: the name is not on this line
    assert status_mailbox(b"* 3 EXISTS") is None
    assert status_mailbox(b"* STATUS Projects") is None


async def test_two_connections_instead_of_one_per_folder(server: MailServer, other: Mailbox) -> None:
    for folder in FOLDERS[1:]:
        await other.create(folder)
    async with desktop(server, folders=FOLDERS) as client:
        assert client.notifying
        assert client.connection_count == 2
        assert client.idling_folders == {"INBOX"}
    async with desktop(server, folders=FOLDERS, notify=False) as client:
        assert not client.notifying
        assert client.connection_count == 3
        assert client.idling_folders == set(FOLDERS)


async def test_changes_in_unselected_folders_reach_the_cache(server: MailServer, other: Mailbox) -> None:
    """New, flagged and expunged messages in folders no connection idles on (ours and Dovecot's NOTIFY)."""
    await other.create("Projects")
    await other.create("Archive")
    kept, gone = new_mid(), new_mid()
    async with desktop(server, folders=FOLDERS) as client:
        assert client.notifying
        await other.append(make_message(kept), folder="Projects")
        await other.append(make_message(gone), folder="Archive")
        await client.wait_for(lambda: client.has_message_id(kept) and client.has_message_id(gone), timeout=5)
        assert client.cache.find(gone)[0].folder == "Archive"
        await other.store(kept, "+FLAGS", r"(\Flagged)", folder="Projects")
        await client.wait_for(lambda: "\\Flagged" in client.cache.find(kept)[0].flags, timeout=5)
        await other.expunge(gone, folder="Archive")
        await client.wait_for_gone(gone, timeout=5)
        assert {e.folder for e in client.events_of("notify")} >= {"Projects", "Archive"}
        assert "Archive" in {e.folder for e in client.events_of("reselect")}
        assert client.idling_folders == {"INBOX"}
        assert any(folder == "Archive" and line.startswith(b"* STATUS") for folder, line in client.wire)


async def test_cloud_recall_in_a_folder_without_idle_leaves_the_cache_within_a_second(lab) -> None:
    """A rule moved the message to Projects; the cloud recall expunges it there. No connection idles on
    Projects: the STATUS line on the INBOX connection is what tells the client."""
    mid = new_mid()
    store = lab.store("corp.example")
    store.create_mailbox(BOB, "Projects")
    async with DesktopClient(BOB, lab.password(BOB), lab.imap("corp.example"), folders=("INBOX", "Projects"),
                             submission=lab.submission("corp.example")) as client:
        await send_original(lab, mid)
        await client.wait_for_message(mid, timeout=5)
        await client.move(mid, "Projects")  # what the rule does, over the INBOX connection
        await client.wait_for(lambda: [c.folder for c in client.cache.find(mid)] == ["Projects"], timeout=5)
        await client.settle()
        assert client.idling_folders == {"INBOX"} and client.connection_count == 2
        mark = len(client.events)
        handle = await RecallAgent(lab, ALICE, lab.password(ALICE)).recall(mid)
        started = time.monotonic()
        await client.wait_for_gone(mid, timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert not store.find_by_message_id(BOB, mid)  # the server removed it: a cloud recall
        kinds = [(e.kind, e.folder) for e in client.events[mark:]]
        assert ("notify", "Projects") in kinds
        assert kinds.index(("notify", "Projects")) < kinds.index(("vanished", "Projects"))
        assert client.idling_folders == {"INBOX"}
        report = await handle.report(timeout=5)
        assert report is not None


async def test_offline_then_online_resyncs_every_folder(server: MailServer, other: Mailbox) -> None:
    await other.create("Projects")
    kept, gone, new, later = new_mid(), new_mid(), new_mid(), new_mid()
    await other.append(make_message(kept), folder="Projects")
    await other.append(make_message(gone), folder="Projects")
    async with desktop(server, folders=("INBOX", "Projects")) as client:
        assert client.notifying and client.has_message_id(gone)
        await client.go_offline()
        assert client.connection_count == 0
        await other.expunge(gone, folder="Projects")
        await other.append(make_message(new), folder="Projects")
        await other.conn.noop()
        assert client.has_message_id(gone)  # offline: the cache still shows it
        await client.go_online()
        assert client.connection_count == 2 and client.idling_folders == {"INBOX"}
        assert not client.has_message_id(gone)
        assert client.has_message_id(kept) and client.has_message_id(new)
        resync = [e.data for e in client.events_of("resync") if e.folder == "Projects"][-1]
        assert resync["method"] == "qresync" and len(resync["dropped"]) == 1
        assert not client.events_of("resync-mismatch")
        await other.append(make_message(later), folder="Projects")  # NOTIFY works again after the reconnect
        await client.wait_for_message(later, timeout=5)


async def test_without_notify_one_idle_connection_per_folder(server: MailServer, other: Mailbox,
                                                             no_notify: None) -> None:
    await other.create("Projects")
    mid = new_mid()
    async with desktop(server, folders=("INBOX", "Projects")) as client:
        assert not client.notifying
        assert client.connection_count == 2 and client.idling_folders == {"INBOX", "Projects"}
        await other.append(make_message(mid), folder="Projects")
        await client.wait_for_message(mid, timeout=5)
        await other.expunge(mid, folder="Projects")
        await client.wait_for_gone(mid, timeout=5)
        assert not client.events_of("notify") and not client.events_of("reselect")


async def test_notify_refused_falls_back_to_idle_per_folder(lab, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(self, mailboxes, events="MessageNew MessageExpunge FlagChange"):
        raise connection.ImapCommandError("NOTIFY SET: NO not today")

    monkeypatch.setattr(connection.ImapConnection, "notify_set", refuse)
    lab.store("corp.example").create_mailbox(BOB, "Projects")
    async with DesktopClient(BOB, lab.password(BOB), lab.imap("corp.example"), folders=("INBOX", "Projects")) \
            as client:
        assert not client.notifying
        assert client.events_of("notify-refused")
        assert client.idling_folders == {"INBOX", "Projects"}


async def test_one_folder_needs_no_notify(server: MailServer) -> None:
    async with desktop(server) as client:
        assert not client.notifying and client.connection_count == 1 and client.idling_folders == {"INBOX"}


async def test_open_a_message_in_a_folder_the_worker_has_not_selected(server: MailServer, other: Mailbox) -> None:
    await other.create("Projects")
    await other.create("Archive")
    first, second = new_mid(), new_mid()
    await other.append(make_message(first, body="First secret.\n"), folder="Projects")
    await other.append(make_message(second, body="Second secret.\n"), folder="Archive")
    async with desktop(server, folders=FOLDERS) as client:
        assert b"First secret" in await client.open(first)  # Archive was selected last: Projects is selected again
        assert b"Second secret" in await client.open(second)
        assert client.cache.find(first)[0].seen and client.cache.find(second)[0].seen
    assert "\\Seen" in await other.flags(first, "Projects")
