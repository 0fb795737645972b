"""Dovecot (the reference server) serves a Maildir written by MaildirStore, and we read back what it changed.

This is the proof that the Maildir layout is Dovecot's: same folders, subscriptions, UIDVALIDITY, UIDs,
flags (keywords included), sizes, internal dates and bytes, seen through real IMAP. The reverse direction
checks that flag changes, appends and expunges made by Dovecot appear in our store after a reopen, with new
MODSEQs for what changed and the Message-ID index up to date.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recall_lab.fake_servers.store import MaildirStore
from recall_lab.fake_servers.store.base import MessageLocation
from tests.store.conftest import ALICE, message

imapclient = pytest.importorskip("imapclient")
dovecot = pytest.importorskip("recall_lab.harness.dovecot")

PASSWORD = "alice-password"


@pytest.fixture
def mail():
    """The Maildir root shared with Dovecot: under the system temp dir, because Dovecot's unprivileged mail
    user cannot pass pytest's tmp_path (mode 0700); removed afterwards."""
    with dovecot.reachable_temp_dir("store-dovecot-") as path:
        yield path / "mail"


@pytest.fixture
def dovecot_server(tmp_path):
    """Factory starting Dovecot on the store's directory; every instance is stopped at teardown."""
    if dovecot.dovecot_binary() is None:
        pytest.skip("dovecot not installed")
    started = []

    def start(mail_root):
        server = dovecot.DovecotServer(tmp_path / f"dovecot{len(started)}", {ALICE: PASSWORD}, mail_root)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
    for server in started:
        problems = [line for line in server.log().splitlines()
                    if any(word in line for word in (" Error: ", "Panic", "Fatal", "Broken", "orrupt"))]
        assert not problems, "Dovecot complained about our files:\n" + "\n".join(problems)


def _client(port: int):
    client = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10)
    client.normalise_times = False
    client.login(ALICE, PASSWORD)
    return client


def _fill(store: MaildirStore) -> None:
    store.ensure_user(ALICE)
    store.create_mailbox(ALICE, "Work/Projects")
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    store.append(ALICE, "INBOX", message(1), (), when)
    store.append(ALICE, "INBOX", message(2), ["\\Seen", "\\Flagged", "Important"], when)
    store.append(ALICE, "INBOX", message(3), ["\\Seen", "\\Answered", "\\Draft", "$Label1"], when)
    store.append(ALICE, "INBOX", message(4), ["\\Deleted"], when)
    store.expunge(ALICE, "INBOX")
    store.deliver(ALICE, b"Subject: lf only\nMessage-ID: <lf@corp.example>\n\nbare\nlines\n")
    store.append(ALICE, "Sent", message(10), ["\\Seen"], when)
    store.copy(ALICE, "INBOX", [2], "Work/Projects")
    store.set_subscribed(ALICE, "Work", False)  # (Drafts etc. are auto-subscribed by the config)
    store.claim_recent(ALICE, "INBOX", [1])


def test_dovecot_serves_what_the_store_wrote(mail, dovecot_server):
    store = MaildirStore(mail)
    _fill(store)
    ours = {m.name: m for m in store.list_mailboxes(ALICE)}
    records = {name: store.messages(ALICE, name) for name in ours}
    raws = {(name, r.uid): store.fetch_raw(ALICE, name, r.uid) for name in ours for r in records[name]}
    subscriptions = store.subscriptions(ALICE)
    store.close()

    server = dovecot_server(mail)
    client = _client(server.port)
    try:
        listed = {name for _, _, name in client.list_folders()}
        assert listed == set(ours)
        assert {name for _, _, name in client.list_sub_folders()} == set(subscriptions)
        for name, info in ours.items():
            status = client.select_folder(name, readonly=True)
            assert status[b"UIDVALIDITY"] == info.uidvalidity, name
            assert status[b"UIDNEXT"] == info.uidnext, name
            assert status[b"EXISTS"] == info.exists, name
            uids = client.search("ALL")
            assert sorted(uids) == [r.uid for r in records[name]], name
            if not uids:
                continue
            fetched = client.fetch(uids, ["FLAGS", "RFC822.SIZE", "INTERNALDATE", "BODY.PEEK[]"])
            for rec in records[name]:
                got = fetched[rec.uid]
                flags = {f.decode() for f in got[b"FLAGS"]} - {"\\Recent"}
                assert flags == set(rec.flags), (name, rec.uid)
                raw = raws[(name, rec.uid)]
                assert got[b"BODY[]"].replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
                if b"\r\n" in raw:
                    assert got[b"RFC822.SIZE"] == rec.size
                assert got[b"INTERNALDATE"] == rec.internaldate
    finally:
        client.logout()


def test_store_sees_dovecot_changes_on_reopen(mail, dovecot_server):
    store = MaildirStore(mail)
    _fill(store)
    before = {r.uid: r for r in store.messages(ALICE, "INBOX")}
    inbox = store.mailbox(ALICE, "INBOX")
    store.close()

    server = dovecot_server(mail)
    client = _client(server.port)
    try:
        client.select_folder("INBOX")
        client.add_flags([1], ["\\Seen", "Todo"])
        client.remove_flags([2], ["\\Flagged", "Important"])
        client.add_flags([3], ["\\Deleted"])
        client.expunge()
        client.append("INBOX", message("via-dovecot"), ["\\Flagged"])
        client.create_folder("FromDovecot")
    finally:
        client.logout()
    server.stop()

    again = MaildirStore(mail)
    try:
        after = {r.uid: r for r in again.messages(ALICE, "INBOX")}
        info = again.mailbox(ALICE, "INBOX")
        assert info.uidvalidity == inbox.uidvalidity
        assert set(after) == {1, 2, 5, inbox.uidnext}
        assert after[1].flags == {"\\Seen", "Todo"}
        assert after[2].flags == {"\\Seen"}
        assert after[5].flags == before[5].flags and after[5].modseq == before[5].modseq
        assert after[inbox.uidnext].flags == {"\\Flagged"}
        assert min(after[1].modseq, after[2].modseq, after[inbox.uidnext].modseq) > inbox.highestmodseq
        assert info.highestmodseq > inbox.highestmodseq
        assert again.find_by_message_id(ALICE, "<via-dovecot@corp.example>") == [
            MessageLocation("INBOX", inbox.uidnext)]
        assert again.find_by_message_id(ALICE, "<3@corp.example>") == []
        assert again.fetch_raw(ALICE, "INBOX", inbox.uidnext).replace(b"\r\n", b"\n") == \
            message("via-dovecot").replace(b"\r\n", b"\n")
        assert "FromDovecot" in {m.name for m in again.list_mailboxes(ALICE)}
        # And our next append continues Dovecot's UIDs.
        assert again.deliver(ALICE, message(99)).uid == inbox.uidnext + 1
    finally:
        again.close()
