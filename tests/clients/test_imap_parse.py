"""The sans-I/O parser of server responses, in the shape aioimaplib delivers them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recall_lab.harness.clients.imap_parse import (
    ParseError,
    compress_uids,
    expand_uid_set,
    parse_envelope,
    parse_fetch,
    parse_untagged,
    parse_values,
)


def test_fetch_with_literal_and_flags_after_it():
    lines = [b"3 FETCH (UID 7 BODY[] {11}", bytearray(b"Hello\r\nBody"), b" FLAGS (\\Seen $Label))", b"done"]
    [record] = parse_fetch(lines)
    assert record.seq == 3 and record.uid == 7
    assert record.section("BODY[]") == b"Hello\r\nBody"
    assert record.flags == frozenset({"\\Seen", "$Label"})


def test_several_fetch_responses_and_other_lines_between():
    lines = [b"1 FETCH (UID 4 FLAGS () MODSEQ (12))", b"2 EXISTS", b"2 FETCH (UID 5 FLAGS (\\Deleted))", b"OK"]
    records = parse_fetch(lines)
    assert [(r.seq, r.uid, r.modseq) for r in records] == [(1, 4, 12), (2, 5, None)]
    assert records[1].flags == frozenset({"\\Deleted"})


def test_section_names_may_hold_spaces_and_parentheses():
    lines = [b"1 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT FROM)] {9}", bytearray(b"Subject:\r"), b")", b"OK"]
    [record] = parse_fetch(lines)
    assert record.section("BODY[HEADER.FIELDS") == b"Subject:\r"


def test_envelope():
    line = (b'1 FETCH (UID 9 ENVELOPE ("Mon, 1 Jan 2024 10:00:00 +0000" "=?utf-8?q?Caf=C3=A9?=" '
            b'(("Alice" NIL "alice" "corp.example")) NIL NIL (("Bob" NIL "bob" "corp.example")) NIL NIL NIL '
            b'"<a@b>"))')
    [record] = parse_fetch([line, b"OK"])
    env = parse_envelope(record.items["ENVELOPE"])
    assert env.subject == "Café"
    assert env.sender == "Alice <alice@corp.example>"
    assert env.message_id == "<a@b>"


def test_envelope_without_name_and_nil_subject():
    value = parse_values([b'(NIL NIL ((NIL NIL "dave" "mail.example")) NIL NIL NIL NIL NIL NIL NIL)'])[0]
    env = parse_envelope(value)
    assert (env.subject, env.sender, env.message_id) == ("", "dave@mail.example", None)
    with pytest.raises(ParseError):
        parse_envelope([b"x"])


def test_quoted_strings_with_escapes():
    assert parse_values([rb'"a \"b\" \\ c" NIL atom']) == [b'a "b" \\ c', None, b"atom"]


@pytest.mark.parametrize("bad", [[b"(a b"], [b'"open'], [b")"]])
def test_malformed_input_raises_parse_error(bad):
    with pytest.raises(ParseError):
        parse_values(bad)


@pytest.mark.parametrize(
    ("line", "kind", "expected"),
    [
        (b"* 5 EXISTS", "exists", 5),
        (b"* 3 EXPUNGE", "expunge", 3),
        (b"* 0 RECENT", "recent", 0),
        (b"* OK [UIDVALIDITY 1234] UIDs valid", "uidvalidity", 1234),
        (b"* OK [HIGHESTMODSEQ 99] Highest", "highestmodseq", 99),
        (b"* OK [UIDNEXT 8] Predicted next UID", "uidnext", 8),
        (b"* CAPABILITY IMAP4rev1", "other", 0),
    ],
)
def test_untagged_numbers(line, kind, expected):
    info = parse_untagged(line)
    assert (info.kind, info.number) == (kind, expected)


def test_untagged_vanished_and_fetch():
    info = parse_untagged(b"* VANISHED (EARLIER) 1:3,7")
    assert info.kind == "vanished" and info.earlier and info.uids == (1, 2, 3, 7)
    info = parse_untagged(b"VANISHED 9")
    assert info.uids == (9,) and not info.earlier
    info = parse_untagged(b"* 4 FETCH (FLAGS (\\Seen) UID 12 MODSEQ (40))")
    assert (info.kind, info.number, info.uid, info.flags, info.modseq) == (
        "fetch", 4, 12, frozenset({"\\Seen"}), 40)
    assert parse_untagged(b"* 4 FETCH (UID 12 BODY[] {40}").kind == "other"  # a literal follows: not a push


def test_expand_refuses_star():
    with pytest.raises(ParseError):
        expand_uid_set("1:*")


@given(st.sets(st.integers(min_value=1, max_value=10_000), max_size=60))
def test_compress_then_expand_round_trips(uids):
    assert set(expand_uid_set(compress_uids(uids))) == uids


_atom = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP0123456789.-_$\\", min_size=1, max_size=12)
_string = st.binary(max_size=40)


def _quote(data: bytes) -> bytes:
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


@given(st.lists(st.one_of(st.tuples(st.just("q"), st.binary(max_size=30).filter(
    lambda b: b"\r" not in b and b"\n" not in b)), st.tuples(st.just("lit"), _string)), max_size=8))
def test_strings_and_literals_round_trip(items):
    """Whatever bytes a server sends as quoted strings or literals come back exactly."""
    lines: list[bytes | bytearray] = []
    current = b"("
    for kind, data in items:
        if kind == "q":
            current += _quote(data) + b" "
        else:
            lines.append(current + b"{%d}" % len(data))
            lines.append(bytearray(data))
            current = b" "
    lines.append(current + b")")
    [value] = parse_values(lines)
    assert value == [data for _kind, data in items]


@given(st.lists(_atom.filter(lambda a: a.upper() != "NIL"), max_size=6))
def test_flag_lists(flags):
    line = b"1 FETCH (UID 1 FLAGS (" + " ".join(flags).encode() + b"))"
    [record] = parse_fetch([line, b"OK"])
    assert record.flags == frozenset(flags)


UNTAGGED_KINDS = {"exists", "expunge", "recent", "vanished", "fetch", "uidvalidity", "highestmodseq", "uidnext",
                  "other"}


@given(st.binary(max_size=80))
def test_untagged_never_raises(line):
    """The tap runs inside the connection's reader: any line must give a value, never an exception."""
    assert parse_untagged(line).kind in UNTAGGED_KINDS


@given(st.lists(st.sampled_from([b"UID", b"FLAGS", b"MODSEQ", b"(", b")", b"x", b"12", b"\\Seen", b'"q"', b"NIL"]),
                max_size=12))
def test_fetch_pushes_made_of_fetch_words_never_raise(words):
    assert parse_untagged(b"* 3 FETCH (" + b" ".join(words) + b")").kind in UNTAGGED_KINDS
