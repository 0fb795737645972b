"""Fixtures for the store tests: every contract test runs against every implementation (memory, Maildir, and
the store over a real Dovecot, which runs where Dovecot with LMTP is installed)."""

from __future__ import annotations

import pytest

from recall_lab.fake_servers.store import MaildirStore, MemoryStore
from recall_lab.fake_servers.store.base import MailStore, StoreEvent

ALICE = "alice@corp.example"
BOB = "bob@corp.example"


def message(n: int | str, subject: str = "hello", mid: str | None = None) -> bytes:
    """A small CRLF message; Message-ID <n@corp.example> unless `mid` is given ("" for none)."""
    mid = f"<{n}@corp.example>" if mid is None else mid
    header = f"Message-ID: {mid}\r\n" if mid else ""
    return (f"From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: {subject} {n}\r\n{header}"
            f"\r\nbody {n}\r\n").encode()


@pytest.fixture(params=["memory", "maildir", "dovecot"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_store(kind: str, tmp_path):
    """A factory: make_store() opens a store (again, for maildir: the same directory = a restart; for
    dovecot: a new store over the same running Dovecot)."""
    opened: list[MailStore] = []
    dovecot = None
    if kind == "dovecot":
        from recall_lab.fake_servers.store.dovecot import DovecotAccess
        from recall_lab.harness.backends import lmtp_available
        from recall_lab.harness.dovecot import DovecotServer

        if not lmtp_available():
            pytest.skip("Dovecot with LMTP is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
        dovecot = DovecotServer(tmp_path / "dovecot", {}, lmtp=True).start()
        access = DovecotAccess("127.0.0.1", dovecot.port, dovecot.lmtp_port, dovecot.master_password,
                               dovecot.login_as, provision=lambda user: dovecot.add_user(user, "pw"))

    def factory() -> MailStore:
        if kind == "dovecot":
            from recall_lab.fake_servers.store.dovecot import DovecotStore

            store: MailStore = DovecotStore(access)
        else:
            store = MemoryStore() if kind == "memory" else MaildirStore(tmp_path / "mail")
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()
    if dovecot is not None:
        dovecot.stop()


@pytest.fixture
def store(make_store) -> MailStore:
    s = make_store()
    s.ensure_user(ALICE)
    return s


@pytest.fixture
def events(store: MailStore) -> list[StoreEvent]:
    seen: list[StoreEvent] = []
    store.subscribe(seen.append)
    yield seen
    store.unsubscribe(seen.append)


#: Where the store over Dovecot keeps a different rule from the lab's own stores, and why (each runs as a strict
#: xfail: it must keep failing, so a change on either side is noticed). docs/dovecot-backend.md lists them.
DOVECOT_DIFFERS = {
    "test_recreated_mailbox_gets_new_uidvalidity_and_never_reuses_uids":
        "Dovecot starts a re-created mailbox at UID 1 under a new UIDVALIDITY (RFC 9051 allows it); the lab's "
        "stores never reuse a UID of a name",
    "test_subscriptions":
        "Dovecot keeps its `auto = subscribe` mailboxes (INBOX, Sent, Drafts, Trash) subscribed whatever UNSUBSCRIBE",
    "test_raw_bytes_are_kept_exactly":
        "Dovecot stores lines, not bytes: a bare LF comes back as CRLF (the lab's SMTP refuses bare LF anyway)",
    "test_store_flags_modes_modseq_and_events":
        "Dovecot gives every message changed by one STORE the same MODSEQ (RFC 7162 allows it); the lab's stores "
        "take one MODSEQ per message",
    "test_message_id_index_does_not_read_messages":
        "the check patches the in-process stores' reader; the Dovecot store reads the Message-ID header over IMAP",
    "test_claim_recent_is_given_once":
        "\\Recent is Dovecot's to give to its own IMAP sessions; the store claims none",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(item, "originalname", item.name)
        if item.name.endswith("[dovecot]") and name in DOVECOT_DIFFERS:
            item.add_marker(pytest.mark.xfail(reason=DOVECOT_DIFFERS[name], strict=True))
