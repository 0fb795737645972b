"""ESEARCH (RFC 4731) and ESORT (RFC 5267): the RETURN option parser, the `* ESEARCH` line, and the extended
SEARCH/SORT commands of a session.

Why both layers: the parser and the line writer are checked against their grammar with hypothesis (any input
is a result or a ParseError, ranges always come out ordered, a written set names exactly the hits), and the
session tests pin the answers Dovecot 2.3.19 gives to the same commands (option order MIN MAX ALL PARTIAL
COUNT, COUNT 0 but no MIN/MAX/ALL for an empty result, MODSEQ of what was returned).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.errors import ParseError
from recall_lab.fake_servers.imap.esearch import (
    MAX_PARTIAL,
    ReturnOptions,
    esearch_line,
    parse_partial_range,
    parse_return,
    sequence_set,
)
from recall_lab.fake_servers.imap.lexer import Lexer
from recall_lab.fake_servers.imap.seqset import SequenceSet
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS, make_message
from .sansio import Client, response_lines, selected_client


def _ret(text: str, sort: bool = False) -> tuple[ReturnOptions | None, int]:
    data = text.encode()
    lx = Lexer(data, 0)
    opts = parse_return(lx, sort)
    return opts, lx.pos


# -- parser ----------------------------------------------------------------------------------------------------
def test_no_return_consumes_nothing() -> None:
    assert _ret("ALL") == (None, 0)
    assert _ret("RETURNED") == (None, 0)


@pytest.mark.parametrize(("text", "want"), [
    ("RETURN () ALL", ReturnOptions(all=True)),
    ("RETURN (MIN) ALL", ReturnOptions(min=True)),
    ("RETURN (min max) ALL", ReturnOptions(min=True, max=True)),
    ("RETURN (MIN MIN COUNT) ALL", ReturnOptions(min=True, count=True)),
    ("RETURN (ALL COUNT) ALL", ReturnOptions(all=True, count=True)),
    ("RETURN (UPDATE) ALL", ReturnOptions(update=True)),
    ("RETURN (CONTEXT COUNT) ALL", ReturnOptions(count=True)),
    ("RETURN (PARTIAL 4:2) ALL", ReturnOptions(partial=(2, 4))),
    ("RETURN (UPDATE PARTIAL 1:10 COUNT) ALL", ReturnOptions(update=True, count=True, partial=(1, 10))),
])
def test_return_options(text: str, want: ReturnOptions) -> None:
    opts, pos = _ret(text)
    assert opts == want
    assert text[pos:] == "ALL"


@pytest.mark.parametrize(("text", "reason"), [
    ("RETURN (FOO) ALL", "unknown RETURN option"),
    ("RETURN (SAVE) ALL", "SEARCHRES"),
    ("RETURN (PARTIAL 1) ALL", "low:high"),
    ("RETURN (PARTIAL 1:*) ALL", "low:high"),
    ("RETURN (PARTIAL *:1) ALL", "low:high"),
    ("RETURN (PARTIAL 0:3) ALL", "1 to"),
    (f"RETURN (PARTIAL 1:{MAX_PARTIAL + 1}) ALL", "1 to"),
    ("RETURN (PARTIAL 1:2 PARTIAL 1:3) ALL", "only once"),
    ("RETURN (PARTIAL 1:2 ALL) ALL", "together"),
    ("RETURN MIN ALL", "parenthesised"),
    ("RETURN (MIN", "missing argument"),
])
def test_bad_return_options(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        _ret(text)


def test_update_is_refused_for_sort() -> None:
    with pytest.raises(ParseError, match="CONTEXT=SORT"):
        _ret("RETURN (UPDATE) (ARRIVAL) UTF-8 ALL", sort=True)
    assert _ret("RETURN (PARTIAL 1:2) (ARRIVAL)", sort=True)[0] == ReturnOptions(partial=(1, 2))


@given(st.binary(max_size=60))
def test_any_bytes_parse_or_fail_cleanly(tail: bytes) -> None:
    lx = Lexer(b"RETURN " + tail, 0)
    try:
        opts = parse_return(lx, sort=False)
    except ParseError:
        return
    assert opts is not None
    if opts.partial is not None:
        low, high = opts.partial
        assert 1 <= low <= high <= MAX_PARTIAL
        assert not opts.all


@given(st.integers(1, MAX_PARTIAL), st.integers(1, MAX_PARTIAL))
def test_partial_range_is_ordered(a: int, b: int) -> None:
    assert parse_partial_range(f"{a}:{b}") == (min(a, b), max(a, b))


# -- writing ---------------------------------------------------------------------------------------------------
def _expand(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


@given(st.lists(st.integers(1, 300), unique=True, max_size=60))
def test_ordered_set_keeps_the_order(numbers: list[int]) -> None:
    text = sequence_set(numbers, ordered=True)
    assert (_expand(text) if numbers else []) == numbers


@given(st.lists(st.integers(1, 300), unique=True, min_size=1, max_size=60))
def test_unordered_set_names_exactly_the_hits(numbers: list[int]) -> None:
    text = sequence_set(sorted(numbers), ordered=False)
    assert SequenceSet.parse(text).seqs(300) == sorted(numbers)


@given(st.lists(st.integers(1, 50), unique=True, max_size=20), st.integers(1, 30), st.integers(1, 30))
def test_partial_window(numbers: list[int], a: int, b: int) -> None:
    hits = sorted(numbers)
    low, high = min(a, b), max(a, b)
    line = esearch_line("t", False, ReturnOptions(partial=(low, high)), hits).decode()
    m = re.search(r"PARTIAL \((\d+):(\d+) (\S+)\)", line)
    assert m is not None and (int(m.group(1)), int(m.group(2))) == (low, high)
    window = hits[low - 1:high]
    assert (m.group(3) == "NIL") if not window else _expand(m.group(3)) == window


def test_line_shapes() -> None:
    everything = ReturnOptions(min=True, max=True, all=True, count=True)
    assert esearch_line("a1", False, everything, [1, 2, 3, 6]) == \
        b'* ESEARCH (TAG "a1") MIN 1 MAX 6 ALL 1:3,6 COUNT 4\r\n'
    assert esearch_line("a1", True, everything, []) == b'* ESEARCH (TAG "a1") UID COUNT 0\r\n'
    assert esearch_line("a1", False, ReturnOptions(min=True), [], modseq=9) == b'* ESEARCH (TAG "a1")\r\n'
    assert esearch_line("a1", False, ReturnOptions(max=True), [4, 2], ordered=True, modseq=9) == \
        b'* ESEARCH (TAG "a1") MAX 2 MODSEQ 9\r\n'


# -- the session -----------------------------------------------------------------------------------------------
@pytest.fixture
def client() -> Client:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    for n in range(1, 7):
        store.deliver(ALICE, make_message(n, subject=f"s{7 - n}"))
    return selected_client(store, Accounts(USERS))


_lines = response_lines


@pytest.mark.parametrize(("command", "want"), [
    ("SEARCH RETURN (MIN MAX COUNT ALL) ALL", '* ESEARCH (TAG "t") MIN 1 MAX 6 ALL 1:6 COUNT 6'),
    ("SEARCH RETURN () 2:4", '* ESEARCH (TAG "t") ALL 2:4'),
    ("SEARCH RETURN (MIN) 1000", '* ESEARCH (TAG "t")'),
    ("UID SEARCH RETURN (COUNT MIN) 1000", '* ESEARCH (TAG "t") UID COUNT 0'),
    ("UID SEARCH RETURN (MAX) 2,4", '* ESEARCH (TAG "t") UID MAX 4'),
    ("SEARCH RETURN (PARTIAL 2:3 COUNT) ALL", '* ESEARCH (TAG "t") PARTIAL (2:3 2:3) COUNT 6'),
    ("SEARCH RETURN (PARTIAL 6:9) 1:2", '* ESEARCH (TAG "t") PARTIAL (6:9 NIL)'),
    ("SEARCH RETURN (ALL) CHARSET UTF-8 SUBJECT s1", '* ESEARCH (TAG "t") ALL 6'),
    ("SORT RETURN (ALL) (SUBJECT) UTF-8 ALL", '* ESEARCH (TAG "t") ALL 6,5,4,3,2,1'),
    ("SORT RETURN (MIN MAX COUNT) (SUBJECT) UTF-8 2:5", '* ESEARCH (TAG "t") MIN 5 MAX 2 COUNT 4'),
    ("SORT RETURN (PARTIAL 2:3) (REVERSE SUBJECT) UTF-8 ALL", '* ESEARCH (TAG "t") PARTIAL (2:3 2:3)'),
    ("UID SORT RETURN () (ARRIVAL) UTF-8 ALL", '* ESEARCH (TAG "t") UID ALL 1:6'),
])
def test_extended_answers(client: Client, command: str, want: str) -> None:
    lines = _lines(client.send(f"t {command}"))
    assert lines == [want, f"t OK {'Sort' if 'SORT' in command else 'Search'} completed."]


def test_plain_search_and_sort_are_unchanged(client: Client) -> None:
    assert _lines(client.send("t SEARCH 2:3")) == ["* SEARCH 2 3", "t OK Search completed."]
    assert _lines(client.send("t SORT (SUBJECT) UTF-8 1:2")) == ["* SORT 2 1", "t OK Sort completed."]


def test_modseq_is_that_of_what_was_returned(client: Client) -> None:
    client.send("a STORE 3 +FLAGS (\\Seen)")
    client.send("b STORE 1 +FLAGS (\\Seen)")
    out = client.send("c FETCH 1,3 (MODSEQ)")
    modseq1, modseq3 = (int(n) for n in re.findall(rb"MODSEQ \((\d+)\)", out))
    assert modseq1 > modseq3
    assert _lines(client.send("t SEARCH RETURN (MAX) 1:3 MODSEQ 1 SEEN"))[0] == \
        f'* ESEARCH (TAG "t") MAX 3 MODSEQ {modseq3}'
    assert _lines(client.send("t SEARCH RETURN (COUNT) 1:3 MODSEQ 1 SEEN"))[0] == \
        f'* ESEARCH (TAG "t") COUNT 2 MODSEQ {modseq1}'
    assert _lines(client.send(f"t SEARCH RETURN (ALL) MODSEQ {modseq1 + 1}"))[0] == '* ESEARCH (TAG "t")'


@pytest.mark.parametrize("command", [
    "SEARCH RETURN (SAVE) ALL",
    "SEARCH RETURN (PARTIAL 1:*) ALL",
    "SEARCH RETURN (BOGUS) ALL",
    "SEARCH RETURN (ALL)",
    "SORT RETURN (UPDATE) (ARRIVAL) UTF-8 ALL",
    "SORT RETURN (ALL) ARRIVAL UTF-8 ALL",
])
def test_bad_commands_get_bad(client: Client, command: str) -> None:
    lines = _lines(client.send(f"t {command}"))
    assert len(lines) == 1 and lines[0].startswith("t BAD "), lines


def test_capabilities_are_announced(client: Client) -> None:
    caps = client.send("t CAPABILITY").split(b"\r\n")[0].split()
    for cap in (b"ESEARCH", b"ESORT", b"CONTEXT=SEARCH"):
        assert cap in caps
    assert b"CONTEXT=SORT" not in caps and b"SEARCHRES" not in caps
