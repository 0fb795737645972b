"""SEARCH: address keys match parsed addresses (RFC 3501 6.4.4), and search programs are bounded.

Why these two together: both are about what a SEARCH command may make the server do with hostile or odd
input: an address written with comments and folding must still be found by the address a user types, and a
program of 20,000 nested parentheses (or NOT/OR chains) must cost one BAD with a reason, never a
RecursionError answered as NO [SERVERBUG].
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.errors import CommandFailed, ParseError
from recall_lab.fake_servers.imap.lexer import Lexer
from recall_lab.fake_servers.imap.search import SearchLimits, address_text, parse_search
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS
from .sansio import Client

_MESSAGES = [
    "From: user-from@domain.org\nTo: user-to@domain.org\nCc: user-cc@domain.org\nBcc: user-bcc@domain.org\n",
    "From: RealFrom <user-from@domain.org>\nTo: RealTo <user-to@domain.org>\n",
    "From: <user-from (comment)@ (comment) domain.org>\nTo: <user-to@domain.org>\n",
    "From: user-from@domain.org (RealFrom)\nTo: user-to@domain.org (RealTo)\n",
    "From: user-from1@domain.org, user-from2@domain.org\nCc: user-cc@domain.org\n",
    "From: RealFrom <user-from@domain.org>\nTo: groupname: groupuser1@domain.org, groupuser2@domain.org;,\n"
    "  groupname2: groupuser3@domain.org;\n",
    "From: RealFrom <user-from@domain.org>\nTo: groupname:;\n",
    "From: =?utf-8?q?J=C3=BCrgen?= <juergen@example.org>\nTo: \"Doe,\n John\" <john\n @example.org>\n",
    "From: @@@ broken <<<\n",
]


def _client() -> Client:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    for text in _MESSAGES:
        store.append(ALICE, "INBOX", (text + "\nbody\n").replace("\n", "\r\n").encode())
    c = Client(store, Accounts(USERS))
    c.login()
    c.send("s SELECT INBOX")
    return c


def _search(c: Client, keys: str) -> list[int]:
    out = c.send(f"s SEARCH {keys}")
    assert out.endswith(b"s OK Search completed.\r\n"), out
    return [int(n) for n in out.split(b"\r\n")[0].split()[2:]]


@pytest.mark.parametrize(("keys", "hits"), [
    ("FROM user-from@domain.org", [1, 2, 3, 4, 6, 7]),
    ("FROM ser-fro", [1, 2, 3, 4, 5, 6, 7]),
    ("FROM realfrom", [2, 4, 6, 7]),
    ("FROM ealfro", [2, 4, 6, 7]),
    ("TO realto", [2, 4]),
    ("FROM user-from1", [5]),
    ("TO groupname", [6, 7]),
    ("TO groupname2", [6]),
    ("TO groupuser3", [6]),
    ("TO groupuser4", []),
    ("FROM comment", []),  # comments are not part of an address
    ('FROM "realfrom <user-from@domain.org>"', [2, 4, 6, 7]),
    ('FROM "jürgen"', [8]),
    ("TO john@example.org", [8]),
    ('TO "Doe, John"', [8]),
    ("FROM broken", [9]),  # unparsable: its raw text is still searched
    ('FROM ""', [1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ('CC ""', [1, 5]),
])
def test_address_keys_match_the_parsed_addresses(keys, hits):
    assert _search(_client(), keys) == hits


def test_address_text_writes_one_normal_form():
    assert address_text([("Real", None, "u", "d.org"), (None, None, "v", "d.org")]) == "Real <u@d.org>, v@d.org"
    assert address_text([(None, None, "g", None), (None, None, "a", "b"), (None, None, None, None),
                         (None, "@r1,@r2", "c", "d")]) == "g: a@b;, @r1,@r2:c@d"
    assert address_text([(None, None, "empty", None), (None, None, None, None)]) == "empty: ;"
    assert address_text([("=?utf-8?q?Z=C3=BC?=", None, "MISSING_MAILBOX", "MISSING_DOMAIN")]) == "Zü"


# -- bounded search programs ----------------------------------------------------------------------------------

def _parse(text: str, limits: SearchLimits | None = None):
    return parse_search(Lexer(text.encode()), lambda: 10, lambda: 10, limits or SearchLimits())


@pytest.mark.parametrize("keys", [
    "(" * 20_000 + "ALL" + ")" * 20_000,
    "NOT (" * 150 + "ALL" + ")" * 150,
    "OR (" * 150 + "ALL" + ") ALL" * 150,
    "NOT OR " * 150 + "ALL ALL" + " ALL" * 149,
    "OR ALL NOT (" * 150 + "SEEN" + ")" * 150,
])
def test_deep_nesting_is_refused_with_a_reason(keys):
    with pytest.raises(ParseError, match="nested too deeply"):
        _parse(keys)


@pytest.mark.parametrize("keys", [
    "ALL " * 1001,
    "NOT " * 1001 + "ALL",
    "OR " * 1001 + "ALL " * 1001 + "ALL",
])
def test_too_many_keys_are_refused_with_a_reason(keys):
    with pytest.raises(ParseError, match="too many search keys"):
        _parse(keys.strip())


def test_long_flat_chains_are_fine_and_mean_what_they_say():
    c = _client()
    # NOT NOT ... (even count) is the key itself; an OR chain of 300 alternatives is one disjunction
    assert _search(c, "NOT " * 400 + "FROM user-from1") == [5]
    assert _search(c, "NOT " * 401 + "FROM user-from1") == [1, 2, 3, 4, 6, 7, 8, 9]
    right = "OR " * 299 + " ".join(f"TO nobody{i}" for i in range(299)) + " TO groupuser3"
    assert _search(c, right) == [6]
    left = "OR " * 2 + "TO groupuser3 FROM user-from1 TO john"
    assert _search(c, left) == [5, 6, 8]
    assert _search(c, "OR (TO groupuser3 (FROM realfrom)) NOT NOT FROM user-from2") == [5, 6]


def test_limits_are_the_callers():
    with pytest.raises(ParseError, match="nested too deeply"):
        _parse("((ALL))", SearchLimits(max_depth=1))
    with pytest.raises(ParseError, match="too many"):
        _parse("ALL ALL ALL", SearchLimits(max_keys=2))
    assert _parse("((ALL))", SearchLimits(max_depth=2)) is not None


def test_the_session_config_sets_the_limits():
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    c = Client(store, Accounts(USERS), search_limits=SearchLimits(max_depth=1, max_keys=3))
    c.login()
    c.send("s SELECT INBOX")
    assert c.send("s SEARCH (ALL)").startswith(b"* SEARCH")
    assert b"s BAD search keys nested too deeply (at most 1 levels)" in c.send("s SEARCH ((ALL))")
    assert b"s BAD too many search keys (at most 3)" in c.send("s SORT (DATE) UTF-8 ALL ALL ALL ALL")


@pytest.mark.parametrize("command", [
    "SEARCH " + "(" * 20_000 + "ALL" + ")" * 20_000,
    "SEARCH " + "NOT " * 20_000 + "ALL",
    "SEARCH " + "OR " * 20_000 + "ALL " * 20_001,
    "UID SEARCH " + "(NOT " * 5_000 + "ALL" + ")" * 5_000,
    "SORT (DATE) UTF-8 " + "(" * 20_000 + "ALL" + ")" * 20_000,
    "FETCH 1 " + "(" * 20_000 + "FLAGS" + ")" * 20_000,
    "STORE 1 +FLAGS " + "(" * 20_000 + "a" + ")" * 20_000,
    "FETCH 1 (BODY[HEADER.FIELDS " + "(" * 20_000 + "A" + ")" * 20_000 + "])",
    "SORT " + "(" * 20_000 + "DATE" + ")" * 20_000 + " UTF-8 ALL",
    "APPEND INBOX " + "(" * 20_000 + ")" * 20_000 + " {1+}\r\nx",
])
def test_no_recursion_error_anywhere_in_the_command_parser(command):
    c = _client()
    c.session.framer.max_line = 200_000
    out = c.send("t " + command)
    assert re.match(rb"t BAD [^\r\n]+\r\n\Z", out), out[-300:]


_KEYS = st.recursive(
    st.sampled_from(["ALL", "SEEN", "UNSEEN", "FROM x", "1:*", "UID 1", "TO groupuser3", "LARGER 1"]),
    lambda inner: st.one_of(
        inner.map(lambda k: f"NOT {k}"),
        st.tuples(inner, inner).map(lambda ab: f"OR {ab[0]} {ab[1]}"),
        st.lists(inner, min_size=1, max_size=3).map(lambda ks: "(" + " ".join(ks) + ")"),
    ),
    max_leaves=30,
)


@given(st.lists(_KEYS, min_size=1, max_size=4).map(" ".join), st.integers(1, 12), st.integers(1, 60))
@settings(max_examples=200, deadline=None)
def test_any_program_parses_or_is_refused_cleanly(keys, depth, count):
    limits = SearchLimits(max_depth=depth, max_keys=count)
    try:
        prog = _parse(keys, limits)
    except (ParseError, CommandFailed) as exc:
        assert re.search("nested too deeply|too many search keys", str(exc)), exc
    else:
        assert callable(prog.pred)


@given(st.binary(max_size=120))
@settings(max_examples=300)
def test_search_parser_raises_only_protocol_errors(data):
    try:
        parse_search(Lexer(data), lambda: 5, lambda: 5)
    except (ParseError, CommandFailed):
        pass
