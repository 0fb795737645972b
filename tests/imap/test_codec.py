"""Sans-I/O tests of the wire codecs: modified UTF-7, the value serialiser, sequence sets, framing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.imap import utf7
from recall_lab.fake_servers.imap.errors import ParseError
from recall_lab.fake_servers.imap.framing import Command, Continue, Framer, Refused
from recall_lab.fake_servers.imap.lexer import Lexer
from recall_lab.fake_servers.imap.seqset import SequenceSet, compress
from recall_lab.fake_servers.imap.serialise import parse_value, serialise
from recall_lab.fake_servers.imap.values import Atom

# -- modified UTF-7 ------------------------------------------------------------------------------------------


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_utf7_round_trip(name):
    encoded = utf7.encode(name)
    assert encoded.isascii()
    assert utf7.decode(encoded) == name


@pytest.mark.parametrize("plain, wire", [
    ("INBOX", "INBOX"), ("&", "&-"), ("Entwürfe", "Entw&APw-rfe"), ("台北", "&U,BTFw-"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
])
def test_utf7_known_values(plain, wire):
    assert utf7.encode(plain) == wire
    assert utf7.decode(wire) == plain


@pytest.mark.parametrize("bad", ["&", "&AGE-", "&Jjo!", "&U,BTF2XlZyyKng-x&", "\x01"])
def test_utf7_rejects_malformed(bad):
    with pytest.raises(utf7.Utf7Error):
        utf7.decode(bad)


# -- values --------------------------------------------------------------------------------------------------

atoms = st.from_regex(r"\A[A-Za-z\\][A-Za-z0-9.\-]{0,10}\Z").filter(lambda s: s != "NIL").map(Atom)
values = st.recursive(
    st.none() | st.integers(min_value=0, max_value=2**63) | st.text(max_size=40) | st.binary(max_size=40) | atoms,
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


def _normalise(value):
    """What parse_value gives back: lists for tuples, bytes for strs that needed a literal."""
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, str) and not isinstance(value, Atom):
        data = serialise(value)
        return value.encode("utf-8", "surrogateescape") if data.startswith(b"{") else value
    return value


@given(values)
def test_serialiser_output_parses_back_the_same(value):
    assert parse_value(serialise(value)) == _normalise(value)


def test_serialise_examples():
    assert serialise([None, 5, "a \"q\" \\", b"xy", Atom("\\Seen")]) == b'(NIL 5 "a \\"q\\" \\\\" {2}\r\nxy \\Seen)'
    assert serialise("naïve") == b"{6}\r\nna\xc3\xafve"
    assert serialise("line\r\nbreak") == b"{11}\r\nline\r\nbreak"


# -- sequence sets -------------------------------------------------------------------------------------------


def test_sequence_sets():
    s = SequenceSet.parse("1:3,5,7:*")
    assert s.seqs(8) == [1, 2, 3, 5, 7, 8]
    assert SequenceSet.parse("*:4").seqs(6) == [4, 5, 6]
    assert SequenceSet.parse("5:*").uid_indexes([1, 2, 3]) == [2]  # "*" is the largest UID: 3:5
    assert SequenceSet.parse("2:4294967295").uid_indexes([1, 3, 9]) == [1, 2]
    with pytest.raises(ParseError):
        SequenceSet.parse("1:3").seqs(2)
    for bad in ["", "0", "a", "1,,2", "1:", "01"]:
        with pytest.raises(ParseError):
            SequenceSet.parse(bad)
    assert compress([1, 2, 3, 5, 8, 9]) == "1:3,5,8:9"


@given(st.sets(st.integers(min_value=1, max_value=200)))
def test_compress_round_trip(numbers):
    if not numbers:
        return
    parsed = SequenceSet.parse(compress(numbers))
    assert parsed.uid_indexes(list(range(1, 201))) == sorted(n - 1 for n in numbers)


# -- lexer ---------------------------------------------------------------------------------------------------


def test_lexer_strings_and_literals():
    lx = Lexer(b'"a\\"b" {3}\r\nxyz atom (1 (2 NIL) "s")')
    assert lx.astring() == 'a"b'
    lx.sp()
    assert lx.astring() == "xyz"
    lx.sp()
    assert lx.astring() == "atom"
    lx.sp()
    assert lx.value() == [1, [2, None], "s"]
    lx.end()


def test_lexer_body_section_atom():
    lx = Lexer(b"BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]<0.100> FLAGS")
    assert lx.atom() == "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]<0.100>"


def test_lexer_utf8_quoted_and_mailbox():
    assert Lexer('"Grüße"'.encode()).astring() == "Grüße"
    assert Lexer(b"Entw&APw-rfe").mailbox() == "Entwürfe"
    assert Lexer(b"inbox").mailbox() == "INBOX"


# -- framing -------------------------------------------------------------------------------------------------


def test_framer_synchronising_literal():
    f = Framer()
    assert f.feed(b"a1 LOGIN {5}\r\n") == [Continue()]
    assert f.feed(b"al") == []
    assert f.feed(b"ice {3+}\r\npwd\r\n") == [Command(b"a1 LOGIN {5}\r\nalice {3+}\r\npwd")]


def test_framer_byte_by_byte_equals_whole():
    data = b"a NOOP\r\nb APPEND INBOX {4+}\r\nab\r\n\r\nc LOGOUT\r\n"
    whole = Framer().feed(data)
    f = Framer()
    pieces = []
    for i in range(len(data)):
        pieces.extend(f.feed(data[i:i + 1]))
    assert pieces == whole
    assert [e.data for e in whole] == [b"a NOOP", b"b APPEND INBOX {4+}\r\nab\r\n", b"c LOGOUT"]


def test_framer_refuses_long_line_without_buffering():
    f = Framer(max_line=1000)
    events = f.feed(b"t1 SEARCH TEXT " + b"x" * 5000)
    assert events == []
    assert len(f._buf) <= 64  # only a tail is kept
    events = f.feed(b"x" * 5000 + b"\r\nt2 NOOP\r\n")
    assert isinstance(events[0], Refused) and events[0].tag == "t1"
    assert events[1] == Command(b"t2 NOOP")


def test_framer_refuses_big_literals():
    f = Framer(max_literal=100)
    (ev,) = f.feed(b"t1 APPEND INBOX {1000}\r\n")
    assert isinstance(ev, Refused) and ev.tag == "t1" and ev.synchronising
    assert f.feed(b"t2 NOOP\r\n") == [Command(b"t2 NOOP")]
    assert f.feed(b"t3 APPEND INBOX {1000+}\r\n" + b"z" * 600) == []
    assert len(f._buf) == 0 and not f._parts
    events = f.feed(b"z" * 400 + b"\r\nt4 NOOP\r\n")
    assert isinstance(events[0], Refused) and events[0].tag == "t3"
    assert events[1] == Command(b"t4 NOOP")


def test_framer_judges_each_literal_by_the_limit_in_force_when_its_header_is_read():
    """F9: the caller may raise the limit after a command (a pipelined LOGIN) and the next literal sees it."""
    f = Framer(max_literal=10)
    data = b"a1 LOGIN u p\r\na2 APPEND INBOX {50}\r\n"
    events = f.events(data)
    assert next(events) == Command(b"a1 LOGIN u p")
    f.max_literal = 100  # what the session does once the LOGIN succeeded
    assert list(events) == [Continue()]
    # without the change, the same bytes are refused
    (refused,) = Framer(max_literal=10).feed(data)[1:]
    assert isinstance(refused, Refused) and refused.tag == "a2"


@settings(max_examples=200)
@given(st.binary(max_size=120), st.integers(1, 40))
def test_framer_events_lazily_equals_feed(data, cut):
    lazy, eager = Framer(max_line=64, max_literal=32), Framer(max_line=64, max_literal=32)
    got = [ev for chunk in (data[:cut], data[cut:]) for ev in lazy.events(chunk)]
    assert got == [ev for chunk in (data[:cut], data[cut:]) for ev in eager.feed(chunk)]


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_framer_never_raises(chunks):
    f = Framer(max_line=64, max_literal=32)
    for chunk in chunks:
        for ev in f.feed(chunk):
            assert isinstance(ev, Command | Continue | Refused)


@given(st.binary(max_size=60))
def test_value_parser_raises_only_parse_errors(data):
    try:
        parse_value(data)
    except ParseError:
        pass
