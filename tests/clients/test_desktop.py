"""The desktop client against a real IMAP server (ours and Dovecot): cache, pushes, offline resync."""

from __future__ import annotations

import pytest

from recall_lab.harness.clients.desktop import DesktopClient
from tests.clients.conftest import Mailbox, MailServer, make_message, new_mid


def desktop(server: MailServer, **kw) -> DesktopClient:
    return DesktopClient(server.user, server.password, server.imap, **kw)


async def test_caches_existing_and_pushed_messages(server: MailServer, other: Mailbox) -> None:
    first, second = new_mid(), new_mid()
    await other.append(make_message(first))
    async with desktop(server) as client:
        assert client.has_message_id(first)  # fetched during start
        await other.append(make_message(second, subject="Pushed"))
        await client.wait_for_message(second, timeout=5)  # the IDLE push, no polling
        cached = client.cache.find(second)[0]
        assert cached.folder == "INBOX" and b"Pushed" in cached.raw
        assert client.preview(second).subject == "Pushed"
        assert any(e.kind == "exists" for e in client.events)


async def test_expunge_elsewhere_drops_the_cached_copy_at_once(server: MailServer, other: Mailbox) -> None:
    mid = new_mid()
    await other.append(make_message(mid))
    async with desktop(server) as client:
        assert client.has_message_id(mid)
        await other.expunge(mid)
        await client.wait_for_gone(mid, timeout=5)
        kinds = {e.kind for e in client.events}
        assert kinds & {"expunge", "vanished"}, kinds


async def test_flag_push_updates_the_cache(server: MailServer, other: Mailbox) -> None:
    mid = new_mid()
    await other.append(make_message(mid))
    async with desktop(server) as client:
        assert not client.cache.find(mid)[0].seen
        await other.store(mid, "+FLAGS", r"(\Seen)")
        await client.wait_for(lambda: client.cache.find(mid)[0].seen, timeout=5)


@pytest.mark.parametrize("method", ["qresync", "condstore", "uids"])
async def test_offline_period_then_resync_drops_what_the_server_expunged(
        server: MailServer, other: Mailbox, method: str) -> None:
    kept, gone, new, read = new_mid(), new_mid(), new_mid(), new_mid()
    for mid in (kept, gone, read):
        await other.append(make_message(mid))
    async with desktop(server, resync=method) as client:
        await client.go_offline()
        assert not client.online
        await other.expunge(gone)
        await other.store(read, "+FLAGS", r"(\Seen)")
        await other.append(make_message(new))
        await other.conn.noop()
        assert client.has_message_id(gone)  # offline: the cache still shows it
        await client.go_online()
        assert not client.has_message_id(gone)
        assert client.has_message_id(kept) and client.has_message_id(new)
        assert client.cache.find(read)[0].seen
        resync = client.events_of("resync")[-1].data
        assert resync["method"] == method
        assert len(resync["dropped"]) == 1
        assert not client.events_of("resync-mismatch")


async def test_sqlite_cache_survives_a_restart_and_resyncs(server: MailServer, other: Mailbox, tmp_path) -> None:
    a, b = new_mid(), new_mid()
    await other.append(make_message(a))
    await other.append(make_message(b))
    path = tmp_path / "bob.sqlite3"
    async with desktop(server, cache_path=path) as client:
        assert client.has_message_id(a) and client.has_message_id(b)
    await other.expunge(a)
    restarted = desktop(server, cache_path=path)
    assert restarted.has_message_id(a)  # read from the file before connecting
    async with restarted:
        assert not restarted.has_message_id(a)
        assert restarted.has_message_id(b)


async def test_open_sets_seen_on_the_server(server: MailServer, other: Mailbox) -> None:
    mid = new_mid()
    await other.append(make_message(mid, body="The secret figure is 42.\n"))
    async with desktop(server) as client:
        raw = await client.open(mid)
        assert b"secret figure" in raw
        assert client.cache.find(mid)[0].seen
    assert "\\Seen" in await other.flags(mid)


async def test_move_to_another_folder(server: MailServer, other: Mailbox) -> None:
    mid = new_mid()
    await other.create("Projects")
    await other.append(make_message(mid))
    async with desktop(server) as client:
        await client.move(mid, "Projects")
        await client.wait_for_gone(mid, timeout=5)
    assert await other.uids(mid, "Projects")


async def test_mirrors_several_folders(server: MailServer, other: Mailbox) -> None:
    mid = new_mid()
    await other.create("Projects")
    async with desktop(server, folders=("INBOX", "Projects")) as client:
        await other.append(make_message(mid), folder="Projects")
        await client.wait_for_message(mid, timeout=5)
        assert client.cache.find(mid)[0].folder == "Projects"


async def test_settle_reflects_everything_done_before(server: MailServer, other: Mailbox) -> None:
    async with desktop(server) as client:
        mids = [new_mid() for _ in range(3)]
        for mid in mids:
            await other.append(make_message(mid))
        await client.settle()
        assert all(client.has_message_id(m) for m in mids)


async def test_wait_for_times_out_when_nothing_happens(server: MailServer) -> None:
    async with desktop(server) as client:
        with pytest.raises(TimeoutError):
            await client.wait_for_message(new_mid(), timeout=0.2)


async def test_wrong_password_is_a_clear_error(server: MailServer) -> None:
    from recall_lab.harness.clients.connection import ImapClientError

    client = DesktopClient(server.user, "wrong", server.imap)
    with pytest.raises(ImapClientError, match="login"):
        await client.start()


async def test_server_going_away_is_an_event_not_a_crash(lab) -> None:
    endpoint = lab.imap("corp.example")
    client = DesktopClient("bob@corp.example", "bob-password", endpoint)
    await client.start()
    try:
        await lab.stop()
        event = await client.wait_for_event("disconnected", timeout=5)
        assert event.folder == "INBOX"
        assert not client.online
    finally:
        await client.stop()


async def test_without_idle_qresync_or_condstore_it_polls_and_compares_uids(
        server: MailServer, other: Mailbox, monkeypatch) -> None:
    """The fallbacks for a plain IMAP4rev1 server: NOOP polling instead of IDLE, UID comparison on resync."""
    from recall_lab.harness.clients import connection
    from recall_lab.harness.clients import desktop as desktop_module

    real_open = connection.ImapConnection.open

    async def plain_open(self):
        await real_open(self)
        self.capabilities = self.capabilities - {"IDLE", "QRESYNC", "CONDSTORE", "ENABLE"}
        return self

    monkeypatch.setattr(connection.ImapConnection, "open", plain_open)
    monkeypatch.setattr(desktop_module, "POLL_INTERVAL", 0.05)
    kept, gone, new = new_mid(), new_mid(), new_mid()
    await other.append(make_message(kept))
    await other.append(make_message(gone))
    async with desktop(server) as client:
        await other.append(make_message(new))
        await client.wait_for_message(new, timeout=5)  # found by polling
        await client.go_offline()
        await other.expunge(gone)
        await client.go_online()
        assert not client.has_message_id(gone) and client.has_message_id(kept)
        assert client.events_of("resync")[-1].data == {"method": "uids", "dropped": (2,)}
        await other.expunge(kept)
        await client.wait_for_gone(kept, timeout=5)  # EXPUNGE <seq> mapped through the sequence map
        assert client.events_of("expunge")


async def test_wire_keeps_what_the_server_pushed(lab) -> None:
    client = DesktopClient("bob@corp.example", "bob-password", lab.imap("corp.example"))
    async with client:
        record = lab.store("corp.example").deliver("bob@corp.example", make_message(new_mid()))
        await client.wait_for(lambda: len(client.cache) == 1)
        lab.store("corp.example").expunge("bob@corp.example", "INBOX", [record.uid])
        await client.wait_for(lambda: len(client.cache) == 0)
    lines = [line for _folder, line in client.wire]
    assert any(b"EXISTS" in line for line in lines)
    assert lines[-1].startswith(b"* VANISHED")  # QRESYNC is on: removals come as VANISHED


async def test_offline_schedule(lab) -> None:
    from recall_lab.harness.clients.desktop import OfflinePeriod, offline_at

    periods = [OfflinePeriod(10, 20), OfflinePeriod(30)]
    assert [offline_at(periods, t) for t in (0, 10, 19.9, 20, 31, 1e9)] == [False, True, True, False, True, True]
    with pytest.raises(ValueError):
        OfflinePeriod(5, 1)
    waited: list[float] = []
    client = DesktopClient("bob@corp.example", "bob-password", lab.imap("corp.example"), offline_periods=periods)

    async def wait(seconds: float) -> None:
        waited.append(seconds)

    async with client:
        await client.follow_schedule(wait=wait)
        assert waited == [10, 10, 10] and not client.online
        kinds = [e.kind for e in client.events if e.kind in ("offline", "online")]
        assert kinds == ["online", "offline", "online", "offline"]
