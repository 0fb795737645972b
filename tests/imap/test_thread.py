"""THREAD and UID THREAD (RFC 5256): REFERENCES and ORDEREDSUBJECT, through a session without sockets.

Why these cases: each names one rule of thread.py's docstring (Dovecot's linking when References disagree,
dummies at and below the root, subject gathering, date order, ties by UID) with a mailbox small enough to
check by hand; the expected answers are Dovecot 2.3's for the same messages (test_thread_dovecot.py compares
random mailboxes with a live Dovecot). The rest: the command's grammar and errors, hostile input (deep
threads, long References, tangled references), and a 10,000-message THREAD that runs in bounded steps.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.errors import CommandFailed
from recall_lab.fake_servers.imap.thread import (
    MAX_REFERENCES,
    References,
    ThreadHeaders,
    message_ids,
    trim_references,
)
from recall_lab.fake_servers.store.memory import MemoryStore
from tests.loop_lag import quiet_heap  # noqa: F401 - a fixture

from .conftest import ALICE, USERS
from .sansio import Client

_FIRST = datetime(2008, 2, 22, 12, 0, tzinfo=UTC)


def _store(*messages: str | tuple[str, datetime]) -> MemoryStore:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    for i, message in enumerate(messages):
        text, when = message if isinstance(message, tuple) else (message, _FIRST + timedelta(minutes=i))
        store.append(ALICE, "INBOX", text.replace("\n", "\r\n").encode(), (), when)
    return store


def _session(*messages: str | tuple[str, datetime], **config) -> Client:
    """INBOX selected, holding `messages` (message i arrived i minutes after the first unless given)."""
    c = Client(_store(*messages), Accounts(USERS), **config)
    c.login()
    c.send("s SELECT INBOX")
    return c


def _thread(c: Client, command: str = "THREAD REFERENCES UTF-8 ALL") -> str:
    out = c.send(f"t {command}")
    assert out.endswith(b"t OK Thread completed.\r\n"), out
    lines = out.split(b"\r\n")
    assert lines[0].startswith(b"* THREAD"), out
    return lines[0][len(b"* THREAD"):].strip().decode()


def _msg(mid: str | None = None, refs: str | None = None, irt: str | None = None, subject: str | None = None,
         date: str | None = None) -> str:
    headers = [f"{name}: {value}" for name, value in (("Message-ID", mid), ("References", refs),
                                                     ("In-Reply-To", irt), ("Subject", subject),
                                                     ("Date", date)) if value is not None]
    return "\n".join(headers) + "\n\nbody\n"


# -- REFERENCES ------------------------------------------------------------------------------------------------

def test_replies_nest_under_their_parents_and_siblings_go_in_date_order():
    c = _session(_msg("<1@x>"), _msg("<2@x>", irt="<1@x>"), _msg("<3@x>", irt="<1@x>"),
                 _msg("<4@x>", refs="<1@x> <2@x>"), _msg("<5@x>"))
    assert _thread(c) == "(1 (2 4)(3))(5)"


def test_a_message_s_own_references_override_what_others_said_of_it():
    """2 says c is a's child; 3 (which is c) says its parent is b, 2's own child: a loop, so c stands alone
    at the root with b under it, and a is a thread of its own (imaptest `thread`, Dovecot's answer)."""
    c = _session((_msg("<a@b>"), _FIRST + timedelta(hours=2)), (_msg("<b@b>", refs="<a@b> <c@b>"), _FIRST),
                 (_msg("<c@b>", refs="<b@b>"), _FIRST + timedelta(hours=1)))
    assert _thread(c) == "(3 2)(1)"


def test_the_first_link_between_references_wins():
    c = _session(_msg("<a@x>"), _msg("<b@x>"), _msg("<m@x>", refs="<a@x> <c@x>"), _msg("<n@x>", refs="<b@x> <c@x>"))
    # c is a's child (first said); n's References cannot move it under b, n hangs from c all the same
    assert _thread(c) == "(1 (3)(4))(2)"


def test_duplicate_and_missing_message_ids_are_threads_of_their_own():
    c = _session(_msg("<a@x>"), _msg("<a@x>"), _msg(None), _msg("not an id"), _msg("<b@x>", irt="<a@x>"))
    assert _thread(c) == "(1 5)(2)(3)(4)"


def test_in_reply_to_counts_only_without_valid_references():
    c = _session(_msg("<a@x>"), _msg("<b@x>"), _msg("<c@x>", refs="<b@x>", irt="<a@x>"),
                 _msg("<d@x>", refs="junk", irt="<a@x> <b@x>"))
    assert _thread(c) == "(1 4)(2 3)"


def test_dummies_below_the_root_give_way_and_at_the_root_keep_two_or_more_children():
    c = _session(_msg("<1@x>", refs="<gone@x>"), _msg("<2@x>", refs="<gone@x>"),
                 _msg("<3@x>", refs="<top@x> <mid@x>"), _msg("<4@x>", refs="<x@x> <y@x> <z@x>"))
    assert _thread(c) == "((1)(2))(3)(4)"


def test_threads_with_the_same_base_subject_are_gathered():
    c = _session(_msg("<1@x>", subject="foo"), _msg("<2@x>", subject="Re: foo", refs="<none@x>"),
                 _msg("<3@x>", subject="bar"), _msg("<4@x>", subject="BAR"), _msg("<5@x>", subject="Re: [x] baz"),
                 _msg("<6@x>", subject="Fwd: baz"), _msg("<7@x>"), _msg("<8@x>", subject="Re:"))
    # foo: a reply joins the original; bar twice and baz in two replies (neither one the original): a dummy
    # over both; no subject and an empty base subject are never gathered
    assert _thread(c) == "(1 2)((3)(4))((5)(6))(7)(8)"


def test_order_is_by_sent_date_with_internaldate_for_missing_dates_and_uid_for_ties():
    c = _session(
        (_msg("<1@x>", date="Fri, 22 Feb 2008 15:00:00 +0000"), _FIRST),
        (_msg("<2@x>", date="Fri, 22 Feb 2008 16:00:00 +0200"), _FIRST),  # 14:00 UTC
        (_msg("<3@x>"), _FIRST + timedelta(hours=1)),  # 13:00 UTC by INTERNALDATE
        (_msg("<4@x>", date="nonsense"), _FIRST + timedelta(hours=1)),  # same instant as 3: UID order
        (_msg("<5@x>", irt="<1@x>", date="Fri, 22 Feb 2008 09:00:00 +0000"), _FIRST),
        (_msg("<6@x>", irt="<1@x>", date="Fri, 22 Feb 2008 08:00:00 +0000"), _FIRST),
    )
    assert _thread(c) == "(3)(4)(2)(1 (6)(5))"


def test_uid_thread_names_uids_and_a_search_limits_the_messages():
    c = _session(_msg("<1@x>"), _msg("<2@x>", irt="<1@x>"), _msg("<3@x>", irt="<2@x>"), _msg("<4@x>"))
    c.send("s STORE 1 +FLAGS (\\Deleted)")
    c.send("s EXPUNGE")
    assert _thread(c) == "(1 2)(3)"  # 1's parent is gone: a dummy with one child gives way to it
    assert _thread(c, "UID THREAD REFERENCES UTF-8 ALL") == "(2 3)(4)"
    assert _thread(c, "THREAD REFERENCES UTF-8 NOT 1") == "(2)(3)"
    assert _thread(c, "UID THREAD REFERENCES US-ASCII UID 3:4") == "(3)(4)"
    assert _thread(c, "THREAD REFERENCES UTF-8 SUBJECT nothing-matches") == ""


def test_an_expunge_rebuilds_the_threads():
    """imaptest `thread7`: a duplicate id; once the original is gone the duplicate takes its place."""
    c = _session(_msg("<a@b>"), _msg("<b@b>", refs="<a@b>"), _msg("<c@b>", refs="<b@b>"),
                 _msg("<b@b>", refs="<a@b>"), **{})
    assert _thread(c) == "(1 (2 3)(4))"
    c.send("s STORE 2 +FLAGS (\\Deleted)")
    c.send("s EXPUNGE")
    assert _thread(c) == "(1 3 2)"


# -- ORDEREDSUBJECT --------------------------------------------------------------------------------------------

def test_orderedsubject_groups_by_base_subject_and_orders_threads_by_their_first_date():
    c = _session(
        (_msg(subject="a", date="Fri, 22 Feb 2008 22:00:10 +0200"), _FIRST),
        (_msg(subject="b", date="Fri, 22 Feb 2008 22:00:09 +0200"), _FIRST),
        (_msg(subject="Re: A", date="Fri, 22 Feb 2008 22:00:08 +0200"), _FIRST),
        (_msg(subject="[list] b", date="Fri, 22 Feb 2008 22:00:07 +0200"), _FIRST),
        (_msg(subject="c"), _FIRST),
        (_msg(), _FIRST), (_msg(subject=" "), _FIRST),
    )
    # c, and the two without a base subject, have no Date: their INTERNALDATE (12:00 UTC) comes first
    assert _thread(c, "THREAD ORDEREDSUBJECT UTF-8 ALL") == "(5)(6 7)(4 2)(3 1)"
    assert _thread(c, "UID THREAD ORDEREDSUBJECT UTF-8 1:4") == "(4 2)(3 1)"


def test_orderedsubject_children_are_siblings_of_the_second_message():
    c = _session(*(_msg(subject=s) for s in ("x", "Re: x", "Re: x", "y", "Fwd: x")))
    assert _thread(c, "THREAD ORDEREDSUBJECT UTF-8 ALL") == "(1 (2)(3)(5))(4)"


# -- the command ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("command", "answer"), [
    ("THREAD", b"t BAD"),
    ("THREAD REFERENCES", b"t BAD"),
    ("THREAD REFERENCES UTF-8", b"t BAD"),
    ("THREAD REFS UTF-8 ALL", b"t BAD Unknown thread algorithm REFS"),
    ("THREAD REFERENCES KOI8-R ALL", b"t NO [BADCHARSET (UTF-8 US-ASCII)]"),
    ("THREAD REFERENCES UTF-8 NOSUCHKEY", b"t BAD"),
    ("THREAD REFERENCES UTF-8 ALL extra)", b"t BAD"),
    ("UID THREAD", b"t BAD"),
])
def test_malformed_thread_commands_get_a_tagged_answer(command, answer):
    c = _session(_msg("<1@x>"))
    out = c.send(f"t {command}")
    assert out.startswith(answer) and out.count(b"\r\n") == 1, out
    assert _thread(c) == "(1)"  # the session goes on


def test_thread_needs_a_selected_mailbox_and_is_announced():
    c = Client(_store(), Accounts(USERS))
    c.login()
    assert c.send("t THREAD REFERENCES UTF-8 ALL").startswith(b"t BAD")
    caps = c.send("c CAPABILITY").split(b"\r\n")[0].split()
    assert {b"THREAD=REFERENCES", b"THREAD=ORDEREDSUBJECT", b"SORT=DISPLAY"} <= set(caps)


# -- message-ids and bounds ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "ids"), [
    ("<a@b>", ["a@b"]),
    ("<a@b> <c@d>\r\n <e@f>", ["a@b", "c@d", "e@f"]),
    ("junk <a@b> (comment) <no-at> <@x> <x@> <c@d>", ["a@b", "c@d"]),
    ('<"quoted local"@b> <a (comment) @ b>', ["quotedlocal@b", "a@b"]),
    ("", []),
    ("<<a@b>", ["<a@b"]),
])
def test_message_ids(value, ids):
    assert message_ids(value) == ids


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_message_ids_never_fail_and_give_ids_with_an_at_sign(value):
    for found in message_ids(value):
        assert "@" in found and found[0] != "@" and found[-1] != "@" and ">" not in found


_HEADER = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30)
_ID = st.sampled_from(["<1@x>", "<2@x>", "<3@x>", "<4@x>", "junk", ""])


@given(st.lists(st.tuples(_ID, st.lists(_ID, max_size=4).map(" ".join), _HEADER, _HEADER), min_size=1,
                max_size=8))
@settings(max_examples=80, deadline=None)
def test_any_headers_thread_every_message_exactly_once(messages):
    c = _session(*(_msg(mid or None, refs or None, None, subject, date) for mid, refs, subject, date in messages))
    for algorithm in ("REFERENCES", "ORDEREDSUBJECT"):
        text = _thread(c, f"THREAD {algorithm} UTF-8 ALL")
        numbers = sorted(int(n) for n in text.replace("(", " ").replace(")", " ").split())
        assert numbers == list(range(1, len(messages) + 1))
        assert text.count("(") == text.count(")")


def test_long_references_are_trimmed_keeping_the_first():
    refs = [f"r{i}@x" for i in range(1000)]
    assert trim_references(refs) == refs[:1] + refs[-(MAX_REFERENCES - 1):]
    assert trim_references(refs[:MAX_REFERENCES]) == refs[:MAX_REFERENCES]
    c = _session(_msg("<r0@x>"), _msg("<me@x>", refs=" ".join(f"<{r}>" for r in refs)))
    assert _thread(c) == "(1 2)"  # the thread's start is kept


def test_tangled_references_are_refused_beyond_the_work_limit():
    builder = References(max_work=1000)
    chain = [f"{i}@x" for i in range(300)]
    with pytest.raises(CommandFailed, match="too tangled") as failure:
        for i in range(300):  # a chain, then messages that would close a loop over it again and again
            builder.add(ThreadHeaders(i + 1, i + 1, 0.0, None, chain[i], chain[:i][-1:]))
        for i in range(300):
            builder.add(ThreadHeaders(301 + i, 301 + i, 0.0, None, None, [chain[-1], chain[0]] * 10))
    assert failure.value.code == "LIMIT"


def test_a_deep_thread_is_answered_without_recursion():
    n = 3000  # each message has two replies: nesting as deep as the mailbox is long
    messages = [_msg("<0@x>")]
    for i in range(1, n):
        messages.append(_msg(f"<{i}@x>", irt=f"<{(i - 1) // 2 * 2}@x>"))
    c = _session(*messages)
    text = _thread(c)
    assert text.count("(") == text.count(")") > n // 2
    assert sorted(int(x) for x in text.replace("(", " ").replace(")", " ").split()) == list(range(1, n + 1))


@pytest.mark.usefixtures("quiet_heap")
def test_ten_thousand_messages_thread_in_bounded_steps():
    """The work is cut in steps: with a 20 ms time slice no step holds the session (and so the event loop
    every client shares) much longer, and the answer is the same as without slices. Steps are timed in CPU time
    with the earlier tests' objects frozen out of the collector (tests/loop_lag.py says why)."""
    n = 10_000
    messages = []
    for i in range(n):
        refs = " ".join(f"<{j}@x>" for j in range(max(i - i % 50, i - 20), i)) or None  # threads of 50
        messages.append((_msg(f"<{i}@x>", refs=refs, subject=f"Re: topic {i // 500}"), _FIRST))
    store = _store(*messages)
    whole = Client(store, Accounts(USERS))
    whole.login()
    whole.send("s SELECT INBOX")
    expected = _thread(whole)
    assert expected.count("(") >= n // 50
    sliced = Client(store, Accounts(USERS), time_slice=0.02)
    sliced.login()
    sliced.send("s SELECT INBOX")
    started = time.process_time()
    out = sliced.send("t THREAD REFERENCES UTF-8 ALL")
    longest = time.process_time() - started
    runs = 1
    while sliced.session.runnable:
        started = time.process_time()
        sliced.session.proceed()
        longest = max(longest, time.process_time() - started)
        out += sliced.take()
        runs += 1
    assert runs > 10
    assert longest < 0.3, longest  # a slice is 20 ms; generous for a loaded machine (and a GC pass)
    assert out.split(b"\r\n")[0] == f"* THREAD {expected}".encode()
