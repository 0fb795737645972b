"""SORT=DISPLAY (RFC 5957): DISPLAYFROM and DISPLAYTO order by what a client shows for the first address.

Why these cases: the RFC's three rules (decoded display name, else mailbox@host, else the mailbox, which for
a group is its name) and the ENVELOPE placeholders Dovecot sorts by (`d` is `d@MISSING_DOMAIN`, `<>` is
`MISSING_MAILBOX@MISSING_DOMAIN`); each expected order is Dovecot 2.3's for the same messages.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.errors import ParseError
from recall_lab.fake_servers.imap.sort import parse_criteria
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS
from .sansio import Client


def _session(*headers: str) -> Client:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    for i, header in enumerate(headers):
        store.append(ALICE, "INBOX", f"{header}\r\n\r\n{i + 1}\r\n".encode(), (), datetime(2008, 2, 22, tzinfo=UTC))
    c = Client(store, Accounts(USERS))
    c.login()
    c.send("s SELECT INBOX")
    return c


def _sort(c: Client, criteria: str, command: str = "SORT") -> list[int]:
    out = c.send(f"s {command} ({criteria}) UTF-8 ALL")
    assert out.endswith(b"s OK Sort completed.\r\n"), out
    return [int(n) for n in out.split(b"\r\n")[0].split()[2:]]


def test_displayfrom_uses_the_decoded_display_name_else_the_address():
    c = _session("From: foo bar <a@b.c>", "From: b@c.d", "From: d", "From: =?iso-8859-1?q?foo_aar?= <e@f.g>",
                 "From: =?iso-8859-1?q?foo_car?= <f@g.h>")
    assert _sort(c, "DISPLAYFROM") == [2, 3, 4, 1, 5]
    assert _sort(c, "REVERSE DISPLAYFROM") == [5, 1, 4, 3, 2]


def test_displayto_takes_a_group_s_name():
    c = _session("To: foo bar <a@b.c>", "To: b@c.d", "To: d", "To: =?iso-8859-1?q?foo_aar?= <e@f.g>",
                 "To: =?iso-8859-1?q?foo_car?= <f@g.h>", "To: a: xx@xx.org, yy@yy.org;",
                 "To: z: aa@aa.org, bb@bb.org;", "To: empty:;")
    assert _sort(c, "DISPLAYTO") == [6, 2, 3, 8, 4, 1, 5, 7]
    assert _sort(c, "REVERSE DISPLAYTO") == [7, 5, 1, 4, 8, 3, 2, 6]


def test_missing_parts_sort_as_the_envelope_names_them():
    """As Dovecot: no From first (empty), an empty display name is no name, `<>` sorts by its placeholders."""
    c = _session("From: <>", "From: Al <al@x>", "From: q@q", "Subject: no from", "From: zz@x",
                 "From: Al <al@x>, b@c", 'From: "" <q@q>', "From: d")
    assert _sort(c, "DISPLAYFROM") == [4, 2, 6, 8, 1, 3, 7, 5]


def test_display_keys_combine_with_others_and_in_uid_sort():
    c = _session("From: B <x@y>\r\nTo: a@a\r\nSubject: 2", "From: b <z@y>\r\nTo: c@c\r\nSubject: 1",
                 "From: a@b\r\nTo: b@b\r\nSubject: 3")
    assert _sort(c, "DISPLAYFROM SUBJECT") == [3, 2, 1]
    assert _sort(c, "DISPLAYFROM REVERSE DISPLAYTO") == [3, 2, 1]
    assert _sort(c, "REVERSE DISPLAYTO", "UID SORT") == [2, 3, 1]


def test_display_keys_are_parsed_like_the_others():
    assert parse_criteria(["displayfrom", "REVERSE", "DisplayTo"]) is not None
    with pytest.raises(ParseError):
        parse_criteria(["DISPLAYCC"])
    with pytest.raises(ParseError):
        parse_criteria(["DISPLAYFROM", "REVERSE"])


_ADDRESS_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40)


@given(st.lists(st.tuples(_ADDRESS_TEXT, _ADDRESS_TEXT), min_size=1, max_size=5))
@settings(max_examples=80, deadline=None)
def test_any_address_headers_sort_without_error(headers):
    c = _session(*(f"From: {f}\r\nTo: {t}" for f, t in headers))
    for criteria in ("DISPLAYFROM", "REVERSE DISPLAYTO", "DISPLAYTO DISPLAYFROM"):
        assert sorted(_sort(c, criteria)) == list(range(1, len(headers) + 1))
