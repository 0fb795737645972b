"""NOTIFY (RFC 5465): the parser (hypothesis: arbitrary arguments never raise anything but a tagged reply),
the session without sockets (STATUS for other mailboxes, LIST for mailbox and subscription changes, the
selected mailbox pushed between commands with MessageNew's fetch attributes) and one idling socket client that
hears every folder."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.errors import CommandFailed, ParseError
from recall_lab.fake_servers.imap.lexer import Lexer
from recall_lab.fake_servers.imap.notify import MAX_GROUPS, parse_notify, status_items
from recall_lab.fake_servers.imap.user_sessions import UserSessions
from recall_lab.fake_servers.store.memory import MemoryStore
from tests.imap.conftest import ALICE, ALICE_PW, USERS, make_message
from tests.imap.rawclient import Raw
from tests.imap.sansio import Client


def _parse(text: str):
    return parse_notify(Lexer(text.encode()))


def test_parse_set_status_groups_and_none() -> None:
    spec = _parse(" SET STATUS (selected (MessageNew (UID FLAGS) MessageExpunge)) (subtree (Work Home) (MailboxName))"
                  " (mailboxes INBOX (MessageNew MessageExpunge FlagChange))")
    assert spec is not None and spec.status
    assert [g.filter for g in spec.groups] == ["SELECTED", "SUBTREE", "MAILBOXES"]
    assert [i.name for i in spec.groups[0].fetch_atts] == ["UID", "FLAGS"]
    assert spec.groups[1].names == ("Work", "Home")
    assert spec.events_for("Work/2026", set) == frozenset({"MailboxName"})
    assert spec.events_for("INBOX", set) == frozenset({"MessageNew", "MessageExpunge", "FlagChange"})
    assert spec.events_for("Other", set) == frozenset()
    assert _parse(" NONE") is None


@pytest.mark.parametrize("text", [
    " SET", " SET STATUS", " SET (personal)", " SET (nowhere (MessageNew))", " SET (personal (Bogus))",
    " SET (personal (MessageNew (UID)))", " SET (selected (MessageNew (BODY[])))", " SET (selected (MailboxName))",
    " SET (selected (MessageNew)) (selected-delayed (MessageNew))", " SET (mailboxes () (MessageNew))",
    " SET (personal (MessageNew MessageNew))", " SETX", " NONE extra",
    " SET" + " (personal NONE)" * (MAX_GROUPS + 1),
])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ParseError):
        _parse(text)


def test_unsupported_event_is_badevent() -> None:
    with pytest.raises(CommandFailed) as info:
        _parse(" SET (personal (MessageNew MessageExpunge AnnotationChange))")
    assert "BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)" in info.value.text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parse_arbitrary_bytes_only_parse_errors(data: bytes) -> None:
    try:
        parse_notify(Lexer(b" SET " + data))
    except (ParseError, CommandFailed):
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["MessageNew", "MessageExpunge", "FlagChange", "MailboxName"]), unique=True))
def test_status_items_follow_the_events(events: list[str]) -> None:
    items = status_items(frozenset(events))
    assert ("MESSAGES" in items) == bool({"MessageNew", "MessageExpunge"} & set(events))
    assert ("UIDNEXT" in items) == ("MessageNew" in events)
    assert ("HIGHESTMODSEQ" in items) == ("FlagChange" in events)


# -- the session --------------------------------------------------------------------------------------------

@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    store.create_mailbox(ALICE, "Work")
    return store


def _client(store: MemoryStore, hub: UserSessions | None = None) -> Client:
    client = Client(store, Accounts(USERS))
    if hub is not None:
        client.session._user_sessions = hub
    client.login()
    return client


def test_status_for_other_mailboxes_and_initial_status(store: MemoryStore) -> None:
    store.append(ALICE, "Work", make_message(1))
    c = _client(store)
    out = c.send("n NOTIFY SET STATUS (selected (MessageNew MessageExpunge)) (personal (MessageNew MessageExpunge))")
    assert b"* STATUS Work (MESSAGES 1 UIDNEXT 2 UIDVALIDITY " in out and b"n OK" in out
    c.send("s SELECT INBOX")
    store.append(ALICE, "Work", make_message(2))
    store.append(ALICE, "Work", make_message(3))
    pushed = c.take()  # between commands: pushed at once, one STATUS for the burst
    assert pushed.count(b"* STATUS Work (MESSAGES 3 UIDNEXT 4 ") == 1 or pushed.count(b"* STATUS Work") == 2, pushed
    store.expunge(ALICE, "Work", [1])
    assert b"* STATUS Work (MESSAGES 2 UIDNEXT 4 " in c.take()


def test_selected_mailbox_pushed_with_fetch_atts_and_expunge(store: MemoryStore) -> None:
    c = _client(store)
    c.send("s SELECT INBOX")
    c.send("n NOTIFY SET (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) MessageExpunge))")
    uid = store.deliver(ALICE, make_message(7, subject="hello")).uid
    out = c.take()
    assert b"* 1 EXISTS" in out
    assert b"* 1 FETCH (UID %d BODY[HEADER.FIELDS (SUBJECT)] {" % uid in out and b"Subject: hello" in out
    assert "\\Seen" not in store.get(ALICE, "INBOX", uid).flags
    store.expunge(ALICE, "INBOX", [uid])
    assert c.take().startswith(b"* 1 EXPUNGE\r\n")  # SELECTED: at once, not held for the next command


def test_selected_delayed_holds_expunge_for_a_command(store: MemoryStore) -> None:
    c = _client(store)
    uid = store.deliver(ALICE, make_message(1)).uid
    c.send("s SELECT INBOX")
    c.send("n NOTIFY SET (selected-delayed (MessageNew MessageExpunge))")
    store.expunge(ALICE, "INBOX", [uid])
    assert b"EXPUNGE" not in c.take()
    assert b"* 1 EXPUNGE" in c.send("x NOOP")


def test_mailbox_names_while_idle_and_not_own(store: MemoryStore) -> None:
    c = _client(store)
    c.send("n NOTIFY SET (personal (MailboxName))")
    assert c.send("i IDLE") == b"+ idling\r\n"
    store.create_mailbox(ALICE, "Later")
    assert c.take() == b'* LIST () "/" Later\r\n'
    store.rename_mailbox(ALICE, "Later", "Renamed")
    assert c.take() == b'* LIST () "/" Renamed ("OLDNAME" (Later))\r\n'
    store.delete_mailbox(ALICE, "Renamed")
    assert c.take() == b'* LIST (\\NonExistent) "/" Renamed\r\n'
    assert c.send("DONE").startswith(b"i OK")
    assert b"LIST" not in c.send("m CREATE Mine")  # its own change: the client knows it


def test_subscription_change_reaches_another_session(store: MemoryStore) -> None:
    hub = UserSessions()
    watcher, other = _client(store, hub), _client(store, hub)
    watcher.send("n NOTIFY SET (personal (SubscriptionChange))")
    other.send("s SUBSCRIBE Work")
    assert watcher.take() == b'* LIST (\\Subscribed) "/" Work\r\n'
    other.send("u UNSUBSCRIBE Work")
    assert watcher.take() == b'* LIST () "/" Work\r\n'
    watcher.send("z NOTIFY NONE")
    other.send("s2 SUBSCRIBE Work")
    assert watcher.take() == b""


def test_other_users_changes_are_not_told(store: MemoryStore) -> None:
    c = _client(store)
    c.send("n NOTIFY SET (personal (MessageNew MessageExpunge))")
    store.deliver("bob@corp.example", make_message(1))
    assert c.take() == b""


def test_overflow_turns_notify_off(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from recall_lab.fake_servers.imap import notify
    monkeypatch.setattr(notify, "MAX_PENDING", 2)
    c = _client(store)
    c.send("n NOTIFY SET (personal (MailboxName))")
    c.send("i IDLE")
    c.session.io.wake = lambda: None  # an adapter that has not run its wake yet: notifications pile up
    for n in range(3):
        store.create_mailbox(ALICE, f"Box{n}")
    out = c.send("DONE")
    assert b"* OK [NOTIFICATIONOVERFLOW]" in out and c.session.notify is None


# -- over a socket ------------------------------------------------------------------------------------------

async def test_one_idling_connection_hears_every_folder(imap) -> None:
    raw = await Raw.connect(imap.host, imap.port)
    try:
        await raw.command(b"a", f"LOGIN {ALICE} {ALICE_PW}".encode())
        assert b"NOTIFY" in b"".join(await raw.command(b"c", b"CAPABILITY"))
        await raw.command(b"s", b"SELECT INBOX")
        await raw.command(b"n", b"NOTIFY SET (selected (MessageNew MessageExpunge)) (personal (MessageNew))")
        await raw.send(b"i IDLE\r\n")
        assert await raw.line() == b"+ idling\r\n"
        imap.store.append(ALICE, "Work", make_message(1))
        line = await raw.line()
        assert line.startswith(b"* STATUS Work (MESSAGES 1 UIDNEXT 2 "), line
        imap.deliver(2)
        assert await raw.line() == b"* 1 EXISTS\r\n"
        await raw.send(b"DONE\r\n")
        assert (await raw.until_tagged(b"i"))[-1].startswith(b"i OK")
        # between commands, not idling: still pushed
        imap.store.append(ALICE, "Work", make_message(3))
        assert (await raw.line()).startswith(b"* STATUS Work (MESSAGES 2 ")
    finally:
        raw.writer.close()
        await asyncio.gather(raw.writer.wait_closed(), return_exceptions=True)
