"""NOTIFY without a SELECTED group (RFC 5465 3.1: "the same as specifying SELECTED NONE"): the selected mailbox's
changes by others are neither pushed (IDLE, between commands) nor told at command ends, while the numbers the
client knows stay valid; the session's own EXPUNGE is still answered; another NOTIFY (an implicit NOOP) or
NOTIFY NONE tells what was held back. Other mailboxes' STATUS lines are unchanged."""

from __future__ import annotations

import re

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.store.memory import MemoryStore
from tests.imap.conftest import ALICE, USERS, make_message
from tests.imap.sansio import Client

WITHOUT_SELECTED = [
    "NOTIFY SET (mailboxes (INBOX Work) (MessageNew MessageExpunge FlagChange))",
    "NOTIFY SET (selected NONE) (mailboxes (INBOX Work) (MessageNew MessageExpunge FlagChange))",
    "NOTIFY SET (personal (MessageNew MessageExpunge FlagChange)) (selected-delayed NONE)",
]
_MESSAGE_LINES = re.compile(rb"^\* \d+ (EXISTS|EXPUNGE|FETCH|RECENT)|^\* VANISHED", re.M)


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    store.create_mailbox(ALICE, "Work")
    return store


def _client(store: MemoryStore, *commands: str) -> Client:
    c = Client(store, Accounts(USERS))
    c.login()
    for n, command in enumerate(commands):
        out = c.send(f"p{n} {command}")
        assert f"p{n} OK".encode() in out, out
    return c


def _uids(store: MemoryStore, n: int) -> list[int]:
    return [store.deliver(ALICE, make_message(i)).uid for i in range(1, n + 1)]


@pytest.mark.parametrize("notify", WITHOUT_SELECTED)
def test_nothing_about_the_selected_mailbox_while_idle_or_at_noop(store: MemoryStore, notify: str) -> None:
    uids = _uids(store, 3)
    c = _client(store, notify, "SELECT INBOX")
    store.deliver(ALICE, make_message(9))
    assert c.take() == b""  # between commands
    assert c.send("i IDLE") == b"+ idling\r\n"
    store.deliver(ALICE, make_message(10))
    store.store_flags(ALICE, "INBOX", [uids[0]], ["\\Flagged"], "add")
    store.expunge(ALICE, "INBOX", [uids[1]])
    assert c.take() == b""
    assert c.send("DONE") == b"i OK IDLE terminated.\r\n"
    for command in ("NOOP", "CHECK"):
        out = c.send(f"n {command}")
        assert _MESSAGE_LINES.search(out) is None and out.startswith(b"n OK"), out
    # the view the client knows: still 3 messages, the expunged one answered from what the session knew
    out = c.send("f FETCH 1:* (UID FLAGS)")
    assert out.count(b" FETCH (") == 3 and b"* 2 FETCH (UID %d " % uids[1] in out, out
    assert b"* 1 FETCH (UID %d FLAGS (\\Flagged" % uids[0] in out  # asked for: the current flags
    assert c.send("b FETCH 2 BODY.PEEK[]").startswith(b"b NO [EXPUNGEISSUED]")
    assert b"* SEARCH 1 3\r\n" in c.send("s SEARCH ALL")  # numbered as the client knows; the gone one left out
    # other mailboxes are still told
    store.append(ALICE, "Work", make_message(20))
    assert c.take().startswith(b"* STATUS Work (MESSAGES 1 UIDNEXT 2 UIDVALIDITY ")


def test_notify_none_tells_what_was_held_and_restores_the_usual_updates(store: MemoryStore) -> None:
    uids = _uids(store, 3)
    c = _client(store, WITHOUT_SELECTED[0], "SELECT INBOX")
    store.expunge(ALICE, "INBOX", [uids[1]])
    store.store_flags(ALICE, "INBOX", [uids[2]], ["\\Seen"], "add")
    new = store.deliver(ALICE, make_message(9)).uid
    assert _MESSAGE_LINES.search(c.send("n NOOP")) is None
    out = c.send("z NOTIFY NONE")
    assert re.search(rb"\* 2 EXPUNGE\r\n(.*\r\n)*\* 3 EXISTS\r\n(.*\r\n)*\* 2 FETCH \(FLAGS \(\\Seen[^\r]*\)\)\r\n"
                     rb"z OK", out), out
    assert b"UID %d" % new in c.send("f FETCH 3 UID")
    store.deliver(ALICE, make_message(10))
    assert b"* 4 EXISTS" in c.send("n2 NOOP")  # as without NOTIFY: at a command's end, not pushed
    store.deliver(ALICE, make_message(11))
    assert c.take() == b""


def test_another_notify_set_is_an_implicit_noop(store: MemoryStore) -> None:
    _uids(store, 1)
    c = _client(store, WITHOUT_SELECTED[0], "SELECT INBOX")
    store.deliver(ALICE, make_message(9))
    out = c.send("n NOTIFY SET (mailboxes Work (MessageNew MessageExpunge))")
    assert b"* 2 EXISTS" in out and out.endswith(b"n OK NOTIFY completed.\r\n"), out
    store.deliver(ALICE, make_message(10))
    assert _MESSAGE_LINES.search(c.send("x NOOP")) is None  # held again
    # a SELECTED group: pushed from now on, what was held included
    out = c.send("y NOTIFY SET (selected (MessageNew MessageExpunge FlagChange))")
    assert b"* 3 EXISTS" in out, out
    store.deliver(ALICE, make_message(11))
    assert c.take().startswith(b"* 4 EXISTS")


def test_own_expunge_is_answered_in_the_numbers_the_client_knows(store: MemoryStore) -> None:
    uids = _uids(store, 4)
    c = _client(store, WITHOUT_SELECTED[0], "SELECT INBOX")
    store.expunge(ALICE, "INBOX", [uids[0]])  # by another client: held, message 1 stays in the client's view
    store.deliver(ALICE, make_message(9))
    out = c.send("s STORE 3 +FLAGS (\\Deleted)")
    assert out.startswith(b"* 3 FETCH (FLAGS (\\Deleted"), out  # its own STORE: answered as usual
    out = c.send("e EXPUNGE")
    assert re.findall(rb"^\* \d+ (?:EXPUNGE|EXISTS)", out, re.M) == [b"* 3 EXPUNGE"], out
    raw = make_message(30)
    out = c.send(b"a APPEND INBOX {%d+}\r\n%b\r\n" % (len(raw), raw))  # its own APPEND: a new message, held
    assert b"a OK [APPENDUID " in out and b"EXISTS" not in out, out
    out = c.send("z NOTIFY NONE")
    assert out.startswith(b"* 1 EXPUNGE\r\n* 4 EXISTS\r\n"), out
    assert c.send("f UID FETCH 1:* UID").count(b"FETCH") == 4


def test_highestmodseq_stays_below_a_held_change(store: MemoryStore) -> None:
    uids = _uids(store, 3)
    c = _client(store, "ENABLE QRESYNC", WITHOUT_SELECTED[0], "SELECT INBOX")
    store.store_flags(ALICE, "INBOX", [uids[0]], ["\\Flagged"], "add")  # held
    before = store.mailbox(ALICE, "INBOX").highestmodseq
    c.send("s STORE 3 +FLAGS.SILENT (\\Deleted)")
    out = c.send("e EXPUNGE")
    told = [int(n) for n in re.findall(rb"HIGHESTMODSEQ (\d+)", out)]
    assert b"VANISHED" in out and told and all(n - 1 < before for n in told), out  # MODSEQ_SHIFT: wire = +1
    out = c.send("z NOTIFY NONE")
    assert b"* 1 FETCH (UID %d FLAGS (\\Flagged" % uids[0] in out, out


def test_search_context_hears_of_held_messages_only_when_released(store: MemoryStore) -> None:
    _uids(store, 1)
    c = _client(store, "SELECT INBOX", WITHOUT_SELECTED[0])
    assert b"u OK" in c.send("u SEARCH RETURN (UPDATE) ALL")
    store.deliver(ALICE, make_message(9))
    assert b"ADDTO" not in c.send("n NOOP")
    out = c.send("z NOTIFY NONE")
    assert re.search(rb'\* 2 EXISTS\r\n(.*\r\n)*\* ESEARCH \(TAG "u"\) ADDTO \(0 2\)\r\n', out), out
