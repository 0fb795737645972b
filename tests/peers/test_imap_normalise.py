"""The differential test's normaliser, without sockets: it must erase only what may legitimately differ."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from .imap_normalise import Normaliser, expand_set, original_positions, parse


def norm(*steps: tuple[str, list[bytes]]) -> list[list[str]]:
    n = Normaliser()
    return [n.step("A", command, responses) for command, responses in steps]


def test_expunge_reporting_orders_are_equivalent() -> None:
    # removing positions 1 and 2 of a mailbox: high to low, or low to low with renumbering
    assert original_positions([2, 1]) == original_positions([1, 1]) == [1, 2]
    assert original_positions([3, 1, 1]) == [1, 2, 3]
    assert original_positions([1, 2]) == [1, 3]


@given(st.lists(st.integers(1, 30), min_size=1, max_size=10, unique=True))
def test_any_expunge_order_gives_the_removed_positions(removed: list[int]) -> None:
    alive = list(range(1, 31))
    reported = []
    for original in removed:  # report each removal by its sequence number at that moment
        reported.append(alive.index(original) + 1)
        alive.remove(original)
    assert original_positions(reported) == sorted(removed)


def test_sets_and_literals() -> None:
    assert expand_set("3:1,5") == "1,2,3,5"
    assert expand_set("1:*") == "1:*"  # open ranges stay as they are
    assert parse(b'(FLAGS (\\Seen) BODY[HEADER.FIELDS (SUBJECT)] {4}\r\nab\r\n NIL "q\\"x")')[0] == [
        ["FLAGS", ["\\Seen"], "BODY[HEADER.FIELDS (SUBJECT)]", b"ab\r\n", None, b'q"x']]


def test_text_and_optional_codes_are_erased_but_status_is_not() -> None:
    a = norm(("NOOP", [b"a1 OK NOOP completed (0.001 + 0.000 secs)."]))
    b = norm(("NOOP", [b"a1 OK [CLIENTBUG] Done."]))
    c = norm(("NOOP", [b"a1 NO Done."]))
    assert a == b != c


def test_uidvalidity_values_become_labels_in_order() -> None:
    a = norm(("STATUS X (UIDVALIDITY)", [b"* STATUS X (UIDVALIDITY 1795502556)", b"a1 OK"]),
             ("STATUS Y (UIDVALIDITY)", [b"* STATUS Y (UIDVALIDITY 1795502557)", b"a2 OK"]))
    b = norm(("STATUS X (UIDVALIDITY)", [b"* STATUS X (UIDVALIDITY 7)", b"a1 OK"]),
             ("STATUS Y (UIDVALIDITY)", [b"* STATUS Y (UIDVALIDITY 9)", b"a2 OK"]))
    same = norm(("STATUS X (UIDVALIDITY)", [b"* STATUS X (UIDVALIDITY 7)", b"a1 OK"]),
                ("STATUS Y (UIDVALIDITY)", [b"* STATUS Y (UIDVALIDITY 7)", b"a2 OK"]))
    assert a == b != same  # two mailboxes sharing a UIDVALIDITY is a difference


def test_fetch_items_order_split_and_dates() -> None:
    a = norm(("FETCH 1 (BODY[TEXT] INTERNALDATE)", [
        b'* 1 FETCH (UID 1 BODY[TEXT] {2}\r\nhi FLAGS (\\Seen \\Recent) INTERNALDATE "24-Nov-2026 09:00:00 +0100")',
        b"a1 OK"]))
    b = norm(("FETCH 1 (BODY[TEXT] INTERNALDATE)", [
        b'* 1 FETCH (INTERNALDATE "24-Nov-2026 08:00:00 +0000" BODY[TEXT] "hi")',
        b"* 1 FETCH (FLAGS (\\Recent \\Seen))", b"a1 OK"]))
    assert a == b
    other_body = norm(("FETCH 1 (BODY[TEXT] INTERNALDATE)", [
        b'* 1 FETCH (INTERNALDATE "24-Nov-2026 08:00:00 +0000" BODY[TEXT] "ho" FLAGS (\\Seen \\Recent))',
        b"a1 OK"]))
    assert other_body != a


def test_modseq_is_compared_by_ordering() -> None:
    def run(before: int, after: int, fetched: int) -> list[list[str]]:
        return norm(("SELECT INBOX (CONDSTORE)", [b"* OK [HIGHESTMODSEQ %d] x" % before, b"a1 OK [READ-WRITE]"]),
                    ("STORE 1 +FLAGS (\\Seen)", [b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (%d))" % fetched, b"a2 OK"]),
                    ("STATUS INBOX (HIGHESTMODSEQ)", [b"* STATUS INBOX (HIGHESTMODSEQ %d)" % after, b"a3 OK"]))
    assert run(5, 6, 6) == run(100, 250, 250)
    assert run(5, 6, 6) != run(5, 5, 5)  # a change that did not raise the MODSEQ is a difference
