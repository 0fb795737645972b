"""STATUS=SIZE (RFC 8438): STATUS and LIST-STATUS report a mailbox's size in octets, without sockets."""

from __future__ import annotations

import re

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.errors import ParseError
from recall_lab.fake_servers.imap.lexer import Lexer
from recall_lab.fake_servers.imap.listext import STATUS_ITEMS, parse_status_items
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS, make_message
from .sansio import Client


def _client() -> Client:
    store = MemoryStore()
    store.ensure_user(ALICE)
    store.deliver(ALICE, make_message(1))
    store.deliver(ALICE, make_message(2, body="a longer body than the first one has\n" * 20))
    c = Client(store, Accounts(USERS))
    c.login()
    return c


def _sizes(c: Client) -> list[int]:
    c.send("s EXAMINE INBOX")
    out = c.send("f FETCH 1:* RFC822.SIZE").decode()
    c.send("u UNSELECT")
    return [int(n) for n in re.findall(r"RFC822\.SIZE (\d+)", out)]


def test_size_is_the_sum_of_the_messages_sizes():
    c = _client()
    sizes = _sizes(c)
    assert len(sizes) == 2 and sizes[0] != sizes[1]
    out = c.send("t STATUS INBOX (SIZE MESSAGES)")
    assert out == f"* STATUS INBOX (MESSAGES 2 SIZE {sum(sizes)})\r\nt OK Status completed.\r\n".encode()


def test_size_follows_appends_and_expunges():
    c = _client()
    total = sum(_sizes(c))
    c.session.store.deliver(ALICE, b"Subject: x\r\n\r\n12345\r\n")
    assert f"SIZE {total + 21})".encode() in c.send("t STATUS INBOX (SIZE)")
    c.send("s SELECT INBOX")
    c.send("f STORE 1:* +FLAGS (\\Deleted)")
    c.send("e EXPUNGE")
    assert b"* STATUS INBOX (SIZE 0)\r\n" in c.send("t STATUS INBOX (SIZE)")


def test_an_empty_mailbox_has_size_zero_and_list_status_reports_it():
    c = _client()
    out = c.send('l LIST "" (Sent INBOX) RETURN (STATUS (SIZE))').decode()
    assert "* STATUS Sent (SIZE 0)\r\n" in out
    assert f"* STATUS INBOX (SIZE {sum(_sizes(c))})\r\n" in out


def test_items_are_written_in_one_order_whatever_the_client_asked():
    assert parse_status_items(Lexer(b"(size uidnext MESSAGES size)")) == ("MESSAGES", "UIDNEXT", "SIZE")
    assert STATUS_ITEMS.index("SIZE") > STATUS_ITEMS.index("HIGHESTMODSEQ")


@pytest.mark.parametrize("items,reason", [("()", "Empty STATUS item list"), ("(SIZES)", "unknown STATUS item"),
                                          ("SIZE", "expected")])
def test_bad_status_items(items, reason):
    with pytest.raises(ParseError, match=reason):
        parse_status_items(Lexer(items.encode()))
    c = _client()
    assert c.send(f"t STATUS INBOX {items}").startswith(b"t BAD ")


def test_status_of_a_missing_mailbox_is_no():
    c = _client()
    assert c.send("t STATUS Nope (SIZE)") == b"t NO [NONEXISTENT] Mailbox doesn't exist: Nope\r\n"
