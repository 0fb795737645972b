"""RFC 9051's number sizes: number64 (sizes, partial offsets, mod-sequences, literal lengths) up to 2^63-1,
number (part numbers, UIDVALIDITY) up to 2^32-1; anything larger is a tagged BAD that says why, and no
digit string, however long, costs more than a length check (hypothesis for the bounds)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.errors import ParseError
from recall_lab.fake_servers.imap.fetch_items import parse_item
from recall_lab.fake_servers.imap.framing import Framer, Refused
from recall_lab.fake_servers.imap.lexer import NUMBER64_MAX, NUMBER_MAX, Lexer, check_number
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS, make_message
from .sansio import Client

_DIGITS = st.text("0123456789", min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(_DIGITS, st.sampled_from([NUMBER_MAX, NUMBER64_MAX]))
def test_check_number_accepts_exactly_the_grammar_range(text: str, limit: int) -> None:
    value = int(text)
    if value <= limit:
        assert check_number(text, "n", limit) == value
    else:
        with pytest.raises(ParseError, match="too large"):
            check_number(text, "n", limit)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2 * NUMBER64_MAX + 2))
def test_lexer_number_bound_is_2_63_minus_1(value: int) -> None:
    lx = Lexer(str(value).encode())
    if value <= NUMBER64_MAX:
        assert lx.number("size") == value
    else:
        with pytest.raises(ParseError, match="63-bit number64"):
            lx.number("size")


def test_the_edges() -> None:
    assert check_number("9223372036854775807") == NUMBER64_MAX
    assert check_number("0009223372036854775807") == NUMBER64_MAX  # leading zeros do not count
    with pytest.raises(ParseError):
        check_number("9223372036854775808")
    assert check_number("4294967295", limit=NUMBER_MAX) == NUMBER_MAX
    with pytest.raises(ParseError, match="32-bit number"):
        check_number("4294967296", limit=NUMBER_MAX)


def test_ten_thousand_digits_are_a_bad_not_a_value_error() -> None:
    with pytest.raises(ParseError, match="too large"):
        check_number("9" * 10_000)
    # a generic value (ID, LIST RETURN parameters) keeps an oversize number as an atom
    assert str(Lexer(b"1" * 10_000).value()) == "1" * 10_000
    assert Lexer(str(NUMBER64_MAX).encode()).value() == NUMBER64_MAX


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2 * NUMBER64_MAX + 2), st.integers(0, 2 * NUMBER64_MAX + 2))
def test_partial_origin_and_count_are_number64(origin: int, count: int) -> None:
    text = f"BODY.PEEK[]<{origin}.{count}>"
    if origin <= NUMBER64_MAX and count <= NUMBER64_MAX:
        item = parse_item(text)
        assert (item.origin, item.count) == (origin, count)
    else:
        with pytest.raises(ParseError, match="number64"):
            parse_item(text)


def test_section_part_numbers_stay_32_bit() -> None:
    assert parse_item(f"BODY[{NUMBER_MAX}]").section.part == (NUMBER_MAX,)
    with pytest.raises(ParseError, match="32-bit"):
        parse_item(f"BODY[{NUMBER_MAX + 1}]")


def test_literal_length_over_number64_is_refused_with_the_reason() -> None:
    framer = Framer(max_literal=1000)
    events = framer.feed(b"a APPEND INBOX {9223372036854775808}\r\n")
    assert len(events) == 1 and isinstance(events[0], Refused)
    assert "63-bit number64" in events[0].reason and events[0].tag == "a"
    events = framer.feed(b"b APPEND INBOX {9223372036854775807}\r\n")  # a number64, over the limit
    assert isinstance(events[0], Refused) and "over the limit of 1000" in events[0].reason


@pytest.fixture
def client() -> Client:
    store = MemoryStore()
    store.ensure_user(ALICE)
    store.deliver(ALICE, make_message(1))
    c = Client(store, Accounts(USERS))
    c.login()
    c.send("e ENABLE IMAP4rev2 CONDSTORE")
    c.send("s SELECT INBOX")
    return c


@pytest.mark.parametrize("command", [
    "SEARCH LARGER {n}", "SEARCH SMALLER {n}", "SEARCH MODSEQ {n}", "FETCH 1 BODY.PEEK[]<{n}.1>",
    "FETCH 1 BODY.PEEK[]<0.{n}>", "FETCH 1 (FLAGS) (CHANGEDSINCE {n})", "STORE 1 (UNCHANGEDSINCE {n}) +FLAGS (x)",
])
def test_session_takes_number64_and_refuses_one_more(client: Client, command: str) -> None:
    assert b"t OK" in client.send("t " + command.format(n=NUMBER64_MAX))
    out = client.send("t " + command.format(n=NUMBER64_MAX + 1))
    assert out.startswith(b"t BAD ") and b"number64" in out, out


def test_search_sizes_compare_as_numbers(client: Client) -> None:
    assert client.send(f"t SEARCH SMALLER {NUMBER64_MAX}") == b'* ESEARCH (TAG "t") ALL 1\r\nt OK Search completed.\r\n'
    assert client.send(f"t SEARCH LARGER {NUMBER64_MAX}") == b'* ESEARCH (TAG "t")\r\nt OK Search completed.\r\n'
    assert client.send("t FETCH 1 BODY.PEEK[]<4294967296.1>") == (
        b"* 1 FETCH (BODY[]<4294967296> {0}\r\n)\r\nt OK Fetch completed.\r\n")  # past 32 bits: empty, as Dovecot


def test_qresync_uidvalidity_is_a_32_bit_number() -> None:
    store = MemoryStore()
    store.ensure_user(ALICE)
    c = Client(store, Accounts(USERS))
    c.login()
    c.send("e ENABLE QRESYNC")
    out = c.send(f"t SELECT INBOX (QRESYNC ({NUMBER_MAX + 1} 1))")
    assert out.startswith(b"t BAD ") and b"uidvalidity" in out
    assert b"t OK" in c.send(f"t SELECT INBOX (QRESYNC (1 {NUMBER64_MAX}))")
