"""The lexer against RFC 3501's grammar (section 9): which characters atoms, astrings and list-mailbox take.

Why property tests: the old lexer read every "[" as the start of a FETCH section, so `SELECT a[b` answered
`BAD unterminated [` (imaptest's `atoms` group). The grammar, not a list of probes, says what is legal:
  ATOM-CHAR    = any CHAR except atom-specials ( "(" ")" "{" SP CTL "%" "*" DQUOTE "\\" "]" )
  ASTRING-CHAR = ATOM-CHAR / "]"          list-char = ATOM-CHAR / "%" / "*" / "]"
so "[" is in all three and "]" in astrings and LIST patterns. A FETCH section exists only after BODY,
BODY.PEEK and BINARY*.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.errors import CommandFailed, ParseError
from recall_lab.fake_servers.imap.lexer import MAX_VALUE_DEPTH, Lexer
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS, make_message
from .sansio import Client

_ATOM_SPECIALS = set('(){ %*"\\]')
ATOM_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in _ATOM_SPECIALS)
ASTRING_CHARS = ATOM_CHARS + "]"
LIST_CHARS = ASTRING_CHARS + "%*"
#: Mailbox names here leave out "&" (modified UTF-7's shift) and "/" (the hierarchy separator): both have
#: meanings of their own, tested elsewhere.
_NAME_CHARS = ASTRING_CHARS.replace("&", "").replace("/", "")

atoms = st.text(ATOM_CHARS, min_size=1, max_size=30)
astrings = st.text(ASTRING_CHARS, min_size=1, max_size=30)


def _client() -> Client:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    store.deliver(ALICE, make_message(1))
    c = Client(store, Accounts(USERS))
    c.login()
    return c


@given(astrings)
def test_every_astring_char_reads_back_as_one_astring(text):
    lx = Lexer(text.encode() + b" next")
    assert lx.astring() == text
    lx.sp()
    assert lx.astring() == "next"


@given(st.text(LIST_CHARS, min_size=1, max_size=30).filter(lambda t: "&" not in t))
def test_every_list_char_reads_back_as_one_pattern(text):
    lx = Lexer(text.encode())
    assert lx.mailbox_pattern() == text
    lx.end()


@given(atoms.filter(lambda t: not t.startswith("\\")))
def test_every_atom_is_a_keyword_and_resp_specials_are_not(text):
    assert Lexer(text.encode()).flag() == text
    with pytest.raises(ParseError):
        Lexer((text + "]").encode()).flag()


@given(st.text(_NAME_CHARS, min_size=1, max_size=30).filter(lambda t: t.upper() != "INBOX"))
@settings(max_examples=60, deadline=None)
def test_any_astring_mailbox_name_is_well_formed_in_select_create_and_list(name):
    """SELECT of a missing mailbox is NO (never BAD); CREATE then LIST returns the same name."""
    c = _client()
    assert c.send(f"s SELECT {name}").startswith(b"s NO "), name
    assert c.send(f"c CREATE {name}").startswith(b"c OK"), name
    listed = c.send(f"l LIST \"\" {name}")
    assert listed.endswith(b"l OK List completed.\r\n"), listed
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert f' "/" {name}\r\n'.encode() in listed or f' "/" {quoted}\r\n'.encode() in listed, listed


def test_imaptests_atoms_probe():
    c = _client()
    assert c.send("s SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}").startswith(b"s NO ")
    assert c.send("l LIST \"\" !#$&'+,-.0123456789:;<=>?@^_`|[}%*") == b"l OK List completed.\r\n"
    assert c.send("x SELECT ~foo").startswith(b"x NO ")


def test_brackets_in_names_keywords_and_search_strings():
    c = _client()
    assert c.send("c CREATE x[y").startswith(b"c OK")
    assert c.send("c CREATE x]y").startswith(b"c OK")
    assert c.send("c CREATE body[z").startswith(b"c OK")
    assert b'"/" "x[y"' in c.send('l LIST "" x*')
    assert c.send("s STATUS body[z (MESSAGES)").startswith(b"* STATUS ")
    c.send("s SELECT INBOX")
    out = c.send("s STORE 1 +FLAGS (a[b)")
    assert b"FLAGS (\\Recent a[b)" in out and b"s OK" in out, out
    assert c.send("s STORE 1 +FLAGS (a]b)").startswith(b"s BAD")
    assert c.send("q SEARCH KEYWORD a[b").startswith(b"* SEARCH 1\r\n")
    assert c.send("q SEARCH SUBJECT a[b").startswith(b"* SEARCH\r\n")
    assert c.send("q SEARCH SUBJECT ]").startswith(b"* SEARCH\r\n")
    assert c.send("q SEARCH [").startswith(b"q BAD")  # an unknown key, reported as such
    assert b"unknown search key" in c.send("q SEARCH [")


def test_invalid_modified_utf7_names_no_mailbox_and_list_answers_ok():
    c = _client()
    for command in ("SELECT &abc", "CREATE a&b", "STATUS a&b (MESSAGES)", "DELETE a&b", "RENAME a&b c"):
        assert c.send(f"t {command}").startswith(b"t NO "), command
    assert c.send('l LIST "" &*') == b"l OK List completed.\r\n"


# -- FETCH sections are the one place "[" means something ---------------------------------------------------

@pytest.mark.parametrize("item", [
    "BODY[]", "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]<0.100>", "body.peek[1.MIME]", "BINARY.SIZE[1]",
    'BODY[HEADER.FIELDS ("X]Y" Z)]', "BODY[HEADER.FIELDS ({3}\r\nX]Y)]",
])
def test_fetch_sections_are_read_whole(item):
    lx = Lexer(item.encode() + b" FLAGS")
    assert lx.atom() == item
    lx.sp()
    assert lx.atom() == "FLAGS"


@pytest.mark.parametrize("item", ["BODY[", "BODY[HEADER.FIELDS (A", 'BODY[HEADER.FIELDS ("]', "BODY[{9}\r\nab]"])
def test_unterminated_fetch_sections_are_parse_errors(item):
    with pytest.raises(ParseError, match="unterminated"):
        Lexer(item.encode()).atom()


def test_fetch_still_works_and_brackets_elsewhere_are_plain():
    c = _client()
    c.send("s SELECT INBOX")
    out = c.send("f FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS)")
    assert b"BODY[HEADER.FIELDS (SUBJECT)] {" in out and b"f OK" in out, out
    assert c.send("f FETCH 1 FLAGS[").startswith(b"f BAD")
    assert Lexer(b"FLAGS[x").atom() == "FLAGS[x"


# -- nothing but ParseError / CommandFailed, and no recursion --------------------------------------------------

_GRAMMAR_BYTES = st.binary(max_size=80) | st.text('()[]{}" \\%*]<>.0123456789BODYPEKNIL\r\n', max_size=80).map(
    str.encode)


@given(_GRAMMAR_BYTES)
@settings(max_examples=300)
def test_every_reader_raises_only_protocol_errors(data):
    for method in ("atom", "astring", "mailbox", "mailbox_pattern", "flag", "flag_list", "value", "string",
                   "number", "literal"):
        lx = Lexer(data)
        try:
            getattr(lx, method)()
        except (ParseError, CommandFailed):
            pass
        assert 0 <= lx.pos <= len(data)


@pytest.mark.parametrize("depth", [MAX_VALUE_DEPTH + 1, 20_000])
def test_deeply_nested_values_are_refused_without_recursion(depth):
    with pytest.raises(ParseError, match="nested too deeply"):
        Lexer(b"(" * depth + b")" * depth).value()
    assert Lexer(b"(" * MAX_VALUE_DEPTH + b")" * MAX_VALUE_DEPTH).value() is not None


@pytest.mark.parametrize("command", [
    "ID " + "(" * 20_000 + ")" * 20_000,
    "CREATE x " + "(" * 20_000 + ")" * 20_000,
    'LIST "" * RETURN ' + "(" * 20_000 + ")" * 20_000,
])
def test_deep_nesting_anywhere_is_a_bad_with_a_reason(command):
    c = _client()
    c.session.framer.max_line = 200_000
    out = c.send("t " + command)
    assert re.match(rb"t BAD .*nested too deeply", out), out[:200]
