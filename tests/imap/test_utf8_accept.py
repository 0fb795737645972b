"""UTF8=ACCEPT (RFC 6855), without sockets: UTF-8 mailbox names, `APPEND ... UTF8 (literal8)`, UTF-8 in
quoted strings, no SEARCH CHARSET once enabled; nothing of it before ENABLE."""

from __future__ import annotations

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS
from .sansio import Client

_MESSAGE = "From: Jörg <jörg@bücher.example>\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()


def _client(enable: bool = True) -> tuple[Client, MemoryStore]:
    store = MemoryStore()
    store.ensure_user(ALICE)
    c = Client(store, Accounts(USERS))
    c.login()
    if enable:
        assert c.send("e ENABLE UTF8=ACCEPT") == b"* ENABLED UTF8=ACCEPT\r\ne OK Enabled.\r\n"
    return c, store


def test_append_utf8_literal8() -> None:
    c, store = _client()
    out = c.send(b"a APPEND INBOX UTF8 (~{%d+}\r\n%b)" % (len(_MESSAGE), _MESSAGE))
    assert out.startswith(b"a OK [APPENDUID "), out
    assert store.fetch_raw(ALICE, "INBOX", 1) == _MESSAGE
    c.send("s SELECT INBOX")
    assert "Grüße".encode() in c.send("f FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
    # UTF-8 in a quoted search string
    assert c.send('g SEARCH SUBJECT "grüße"') == b"* SEARCH 1\r\ng OK Search completed.\r\n"


def test_append_utf8_needs_enable_and_a_literal8() -> None:
    c, _ = _client(enable=False)
    out = c.send(b"a APPEND INBOX UTF8 (~{%d+}\r\n%b)" % (len(_MESSAGE), _MESSAGE))
    assert out.startswith(b"a BAD ")
    c.send("e ENABLE UTF8=ACCEPT")
    assert c.send(b"b APPEND INBOX UTF8 ({5+}\r\nHallo)").startswith(b"b BAD UTF8 wants")
    assert c.send(b"c APPEND INBOX UTF8 (~{5+}\r\nHallo").startswith(b"c BAD ")


def test_mailbox_names_in_utf8() -> None:
    c, store = _client()
    assert c.send('c CREATE "Entwürfe/&alt"').startswith(b"c OK ")
    out = c.send('l LIST "" "Entw*"')
    assert '* LIST (\\HasChildren) "/" "Entwürfe"\r\n'.encode() in out
    assert '* LIST (\\HasNoChildren) "/" "Entwürfe/&alt"\r\n'.encode() in out
    assert {"Entwürfe", "Entwürfe/&alt"} <= {b.name for b in store.list_mailboxes(ALICE)}
    out = c.send('s SELECT "Entwürfe/&alt"')
    assert out.endswith(b"s OK [READ-WRITE] Select completed.\r\n")
    assert b"* 0 RECENT\r\n" in out and b"* LIST" not in out  # UTF8=ACCEPT alone: SELECT as in rev1


def test_search_charset_refused_once_enabled() -> None:
    c, store = _client()
    store.deliver(ALICE, _MESSAGE)
    c.send("s SELECT INBOX")
    assert c.send("a SEARCH CHARSET UTF-8 ALL").startswith(b"a BAD ")
    assert c.send("b SEARCH ALL") == b"* SEARCH 1\r\nb OK Search completed.\r\n"


def test_without_enable_names_stay_modified_utf7() -> None:
    c, store = _client(enable=False)
    store.create_mailbox(ALICE, "Entwürfe")
    assert b'"/" Entw&APw-rfe\r\n' in c.send('l LIST "" "Entw*"')


def test_announced_utf8_accept_beside_both_revisions() -> None:
    c, _ = _client(enable=False)
    caps = c.send("c CAPABILITY").split(b"\r\n")[0].split()
    assert b"UTF8=ACCEPT" in caps and b"IMAP4rev1" in caps
    assert b"IMAP4rev2" in caps  # announced beside IMAP4rev1; a session is rev1 until it enables rev2
