"""SORT and THREAD when the search reads no message (ALL, flags, sizes, UIDs): the fast path that skips a Msg
per message answers exactly what the general path answers (the same program with a key that reads the
message and matches everything: `OR ALL SUBJECT x`), for random mailboxes and criteria (hypothesis); and
ties fall back to the sequence number, to which REVERSE does not apply."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.lexer import Lexer
from recall_lab.fake_servers.imap.search import match_all, parse_search
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS, make_message
from .sansio import Client

_RECORD_KEYS = ["ALL", "UNDELETED", "SEEN", "NOT FLAGGED", "LARGER 230", "UID 2:5", "1:3", "OR SEEN DELETED",
                "(UNSEEN UNDELETED)", "ALL ALL"]
_CRITERIA = ["SUBJECT", "REVERSE SUBJECT", "SIZE", "REVERSE SIZE", "ARRIVAL", "DATE", "FROM",
             "REVERSE DATE SUBJECT", "SIZE REVERSE ARRIVAL"]
_FLAGS = ["\\Seen", "\\Deleted", "\\Flagged"]


def _client(messages: list[tuple[str, int, list[str]]]) -> Client:
    store = MemoryStore()
    store.ensure_user(ALICE)
    for n, (subject, body, flags) in enumerate(messages):
        store.deliver(ALICE, make_message(n % 3, subject=subject, body="x" * body + "\n"))
        if flags:
            store.store_flags(ALICE, "INBOX", [n + 1], flags, "add")
    c = Client(store, Accounts(USERS))
    c.login()
    c.send("s SELECT INBOX")
    return c


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "Re: a", "b", "B", "[x] c", ""]), st.integers(0, 3),
                          st.lists(st.sampled_from(_FLAGS), unique=True)), min_size=1, max_size=9),
       st.sampled_from(_RECORD_KEYS), st.sampled_from(_CRITERIA), st.booleans())
def test_record_only_search_sorts_and_threads_as_the_general_path(
        messages: list[tuple[str, int, list[str]]], key: str, criteria: str, uid: bool) -> None:
    c = _client(messages)
    prefix = "UID " if uid else ""
    fast = c.send(f"t {prefix}SORT ({criteria}) UTF-8 {key}")
    general = c.send(f"t {prefix}SORT ({criteria}) UTF-8 OR ALL SUBJECT zzz {key}")
    assert fast == general and fast.startswith(b"* SORT"), (fast, general)
    for algorithm in ("REFERENCES", "ORDEREDSUBJECT"):
        fast = c.send(f"t {prefix}THREAD {algorithm} UTF-8 {key}")
        assert fast == c.send(f"t {prefix}THREAD {algorithm} UTF-8 OR ALL SUBJECT zzz {key}")


def test_ties_keep_sequence_order_under_reverse() -> None:
    c = _client([("same", 1, []), ("same", 1, []), ("other", 5, []), ("same", 1, [])])
    assert c.send("t SORT (REVERSE SUBJECT) UTF-8 ALL").startswith(b"* SORT 1 2 4 3\r\n")
    assert c.send("t SORT (REVERSE SIZE) UTF-8 ALL").startswith(b"* SORT 3 1 2 4\r\n")
    assert c.send("t SORT (SIZE REVERSE SUBJECT) UTF-8 ALL").startswith(b"* SORT 1 2 4 3\r\n")


def test_which_programs_are_record_only() -> None:
    def prog(text: str):  # noqa: ANN202
        return parse_search(Lexer(text.encode()), lambda: 10, lambda: 10)

    assert prog("ALL").matches_all and prog("ALL ALL").matches_all and prog("(ALL)").pred is match_all
    assert prog("UNDELETED LARGER 5 UID 1:3 1:* NOT SEEN OR KEYWORD $x SINCE 1-Jan-2020").record_only
    assert not prog("UNDELETED").matches_all
    for reads in ("SUBJECT x", "FROM x", "HEADER Subject x", "BODY x", "TEXT x", "SENTSINCE 1-Jan-2020",
                  "OR ALL SUBJECT x", "NOT EMAILID M1"):
        assert not prog(reads).record_only, reads
