"""OBJECTID (RFC 8474): MAILBOXID, EMAILID and THREADID, without sockets, on both stores.

What is proved: the ids keep what section 4 and 5 promise (a MAILBOXID survives RENAME and a restart, a mailbox
made again gets a new one; an EMAILID survives COPY, MOVE and a restart, different messages differ), and
every place they appear (CREATE, SELECT/EXAMINE, STATUS, LIST-STATUS, FETCH, SEARCH) agrees.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.objectid import email_id, mailbox_id
from recall_lab.fake_servers.store.base import MailStore
from recall_lab.fake_servers.store.maildir import MaildirStore
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS, make_message
from .sansio import Client

_OBJECTID = r"[A-Za-z0-9_-]{1,255}"


def _store(kind: str, tmp_path: Path) -> MailStore:
    store: MailStore = MaildirStore(tmp_path / "mail") if kind == "maildir" else MemoryStore()
    store.ensure_user(ALICE)
    return store


@pytest.fixture(params=["memory", "maildir"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    s = _store(request.param, tmp_path)
    yield s
    s.close()


def _client(store: MailStore) -> Client:
    c = Client(store, Accounts(USERS))
    c.login()
    return c


def _status_id(c: Client, name: str) -> str:
    m = re.search(rf"\* STATUS \S+ \(MAILBOXID \(({_OBJECTID})\)\)\r\n".encode(),
                  c.send(f"t STATUS {name} (MAILBOXID)"))
    assert m, name
    return m.group(1).decode()


def _email_ids(c: Client, mailbox: str) -> list[str]:
    c.send(f"s EXAMINE {mailbox}")
    out = c.send("f FETCH 1:* (EMAILID THREADID)").decode()
    c.send("u UNSELECT")
    assert out.count("THREADID NIL") == out.count(" FETCH ")
    return re.findall(rf"EMAILID \(({_OBJECTID})\)", out)


def test_mailboxid_is_the_same_on_create_select_examine_status_and_list(store):
    c = _client(store)
    out = c.send("c CREATE Projects")
    created = re.match(rf"c OK \[MAILBOXID \(({_OBJECTID})\)\] ".encode(), out)
    assert created, out
    box = created.group(1).decode()
    assert f"* OK [MAILBOXID ({box})] Ok\r\n".encode() in c.send("s SELECT Projects")
    assert f"* OK [MAILBOXID ({box})] Ok\r\n".encode() in c.send("s EXAMINE Projects")
    assert _status_id(c, "Projects") == box
    assert f"* STATUS Projects (MESSAGES 0 MAILBOXID ({box}))\r\n".encode() in c.send(
        'l LIST "" Projects RETURN (STATUS (MAILBOXID MESSAGES))')
    assert box == mailbox_id(ALICE, store.mailbox(ALICE, "Projects").uidvalidity)


def test_mailboxid_survives_rename_and_changes_when_made_again(store):
    c = _client(store)
    c.send("c CREATE Old/child")
    old, child = _status_id(c, "Old"), _status_id(c, "Old/child")
    assert old != child != _status_id(c, "INBOX")
    assert c.send("r RENAME Old New").startswith(b"r OK")
    assert (_status_id(c, "New"), _status_id(c, "New/child")) == (old, child)
    c.send("c CREATE Old")
    assert _status_id(c, "Old") not in (old, child)
    c.send("d DELETE New/child")
    c.send("c CREATE New/child")
    assert _status_id(c, "New/child") != child


def test_renaming_inbox_gives_the_new_mailbox_a_new_id_and_inbox_keeps_its_own(store):
    c = _client(store)
    inbox = _status_id(c, "INBOX")
    c.send("r RENAME INBOX Old-mail")
    assert _status_id(c, "INBOX") == inbox
    assert _status_id(c, "Old-mail") != inbox


def test_emailid_survives_copy_and_move_and_differs_between_messages(store):
    store.deliver(ALICE, make_message(1))
    store.deliver(ALICE, make_message(2))
    c = _client(store)
    first = _email_ids(c, "INBOX")
    assert len(set(first)) == 2
    c.send("s SELECT INBOX")
    assert c.send("c COPY 1 Drafts").startswith(b"c OK")
    assert b"\r\nm OK " in c.send("m MOVE 2 Trash")
    c.send("u UNSELECT")
    assert _email_ids(c, "Drafts") == [first[0]]
    assert _email_ids(c, "Trash") == [first[1]]
    assert _email_ids(c, "INBOX") == [first[0]]
    assert first == [email_id(make_message(1)), email_id(make_message(2))]


def test_search_emailid_and_threadid(store):
    store.deliver(ALICE, make_message(1))
    store.deliver(ALICE, make_message(2))
    c = _client(store)
    ids = _email_ids(c, "INBOX")
    c.send("s SELECT INBOX")
    assert c.send(f"s UID SEARCH EMAILID {ids[1]}").startswith(b"* SEARCH 2\r\n")
    assert c.send("s SEARCH EMAILID Mnothing").startswith(b"* SEARCH\r\n")
    assert c.send("s SEARCH THREADID T1").startswith(b"* SEARCH\r\n")
    assert c.send("s SEARCH EMAILID").startswith(b"s BAD ")


def test_ids_are_stable_across_a_restart_of_the_maildir_store(tmp_path: Path):
    store = _store("maildir", tmp_path)
    store.deliver(ALICE, make_message(7))
    c = _client(store)
    c.send("c CREATE Kept")
    before = (_status_id(c, "INBOX"), _status_id(c, "Kept"), _email_ids(c, "INBOX"))
    c.send("o LOGOUT")
    store.close()
    again = MaildirStore(tmp_path / "mail")
    try:
        c = _client(again)
        assert (_status_id(c, "INBOX"), _status_id(c, "Kept"), _email_ids(c, "INBOX")) == before
    finally:
        again.close()


def test_ids_are_objectids_and_differ_between_users():
    assert re.fullmatch(_OBJECTID, mailbox_id(ALICE, 1)) and re.fullmatch(_OBJECTID, email_id(b""))
    assert mailbox_id(ALICE, 17) != mailbox_id("bob@corp.example", 17)
    assert mailbox_id(ALICE, 17) == mailbox_id(ALICE.upper(), 17)
