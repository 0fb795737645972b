"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) and SPECIAL-USE in LIST (RFC 6154), without sockets.

The expected answers are Dovecot 2.3.19's for the same commands (where the two stores agree: Dovecot's CREATE
a/b leaves "a" \\NonExistent, ours creates it), checked by hand against a live Dovecot.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.errors import CommandFailed, ParseError
from recall_lab.fake_servers.imap.lexer import Lexer
from recall_lab.fake_servers.imap.listext import MAX_PATTERNS, ListRequest, parse_list
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS, make_message
from .sansio import Client


def _parse(args: str) -> ListRequest:
    return parse_list(Lexer(b"LIST " + args.encode(), 4))


def _client() -> Client:
    store = MemoryStore()
    store.ensure_user(ALICE)
    c = Client(store, Accounts(USERS))
    c.login()
    return c


def _tree(c: Client) -> None:
    """imaptest's listext tree: b/test1 ... b/test8/test9, some subscribed, b/test6 deleted while subscribed."""
    for name in ("b/test1", "b/test2/test1", "b/test3", "b/test4/test5", "b/test4/test52", "b/test6",
                 "b/test7/test7", "b/test8/test8", "b/test8/test9"):
        assert b"OK" in c.send(f"c CREATE {name}")
    for name in ("b/test1", "b/test2/test1", "b/test6", "b/test7/test7", "b/test8/test8", "b/test8/test9"):
        assert c.send(f"s SUBSCRIBE {name}").startswith(b"s OK")
    assert c.send("d DELETE b/test6").startswith(b"d OK")


def _lines(out: bytes) -> list[str]:
    """The untagged lines of one answer (it must end OK)."""
    lines = out.decode().split("\r\n")
    assert lines[-1] == "" and re.match(r"\S+ OK ", lines[-2]), out
    return lines[:-2]


# -- the parser ----------------------------------------------------------------------------------------------
def test_a_plain_list_is_not_extended():
    req = _parse('"" %')
    assert req == ListRequest("", ("%",))
    assert req.show_children and req.show_special_use and not req.show_subscribed


@pytest.mark.parametrize("args", ['() "" %', '"" (%)', '"" % RETURN ()', '(REMOTE) "" %'])
def test_any_extended_syntax_makes_it_extended(args):
    req = _parse(args)
    assert req.extended
    assert not req.show_children and not req.show_special_use


def test_options_and_status_items_are_read():
    req = _parse('(subscribed recursivematch) "ref/" (a b% c*) return (children STATUS (unseen MESSAGES size))')
    assert req.selection == {"SUBSCRIBED", "RECURSIVEMATCH"}
    assert req.reference == "ref/" and req.patterns == ("a", "b%", "c*")
    assert req.returns == {"CHILDREN", "STATUS"}
    assert req.status == ("MESSAGES", "UNSEEN", "SIZE")  # wire order, whatever the client's
    assert req.show_subscribed and req.show_children


@pytest.mark.parametrize("args,reason", [
    ('(imaptest) "" ""', "unknown LIST selection option IMAPTEST"),
    ('(recursivematch) "" ""', "RECURSIVEMATCH needs"),
    ('(recursivematch remote) "" ""', "RECURSIVEMATCH needs"),
    ('"" "" return (imaptest)', "unknown LIST return option IMAPTEST"),
    ('"" % RETURN (STATUS ())', "Empty STATUS item list"),
    ('"" % RETURN (STATUS (FOO))', "unknown STATUS item FOO"),
    ('"" % RETURN (STATUS)', "expected a space"),
    ('"" % RETURN', "missing argument"),
    ('"" % RETURNS ()', "expected RETURN"),
    ('"" ()', "empty LIST pattern list"),
    ('"" % RETURN ((CHILDREN))', "nested too deeply"),
    ('"" (' + " ".join(["x"] * (MAX_PATTERNS + 1)) + ")", f"too many LIST patterns (over {MAX_PATTERNS})"),
])
def test_bad_arguments_get_a_reason(args, reason):
    with pytest.raises(ParseError, match=re.escape(reason)):
        _parse(args)


_WORDS = st.sampled_from(["(", ")", " ", '"', "SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE", "RETURN",
                          "CHILDREN", "STATUS", "MESSAGES", "SIZE", "%", "*", "INBOX", "a/b", '""', "{3}\r\nabc"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_WORDS, max_size=14).map("".join) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_any_input_parses_or_gets_bad(args):
    """Whatever follows LIST, the parser returns a request or raises ParseError/CommandFailed, nothing else."""
    try:
        req = parse_list(Lexer(b"LIST " + args.encode("latin-1"), 4))
    except (ParseError, CommandFailed):
        return
    assert req.patterns and len(req.patterns) <= MAX_PATTERNS
    assert req.status or "STATUS" not in req.returns


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from(["SUBSCRIBED", "REMOTE", "SPECIAL-USE"])),
       st.booleans(),
       st.lists(st.sampled_from(["%", "*", "INBOX", "a/%", "Sent"]), min_size=1, max_size=4),
       st.sets(st.sampled_from(["SUBSCRIBED", "CHILDREN", "SPECIAL-USE"])),
       st.sets(st.sampled_from(["MESSAGES", "UIDNEXT", "SIZE", "MAILBOXID"])))
def test_what_a_client_writes_is_what_is_read(selection, recursive, patterns, returns, status):
    chosen = set(selection) | ({"RECURSIVEMATCH"} if recursive and selection - {"REMOTE"} else set())
    ret = sorted(returns) + ([f"STATUS ({' '.join(sorted(status))})"] if status else [])
    args = f'({" ".join(sorted(chosen))}) "" ({" ".join(patterns)}) RETURN ({" ".join(ret)})'
    req = _parse(args)
    assert req.selection == chosen and req.patterns == tuple(patterns)
    assert req.returns == set(returns) | ({"STATUS"} if status else set())
    assert set(req.status) == status


# -- the answers ---------------------------------------------------------------------------------------------
def test_multiple_patterns_list_each_mailbox_once():
    c = _client()
    _tree(c)
    out = _lines(c.send('l LIST "" (b/*2 b/test3 b/test*2)'))
    assert sorted(out) == ['* LIST () "/" b/test2', '* LIST () "/" b/test3', '* LIST () "/" b/test4/test52']


def test_subscribed_selection_shows_a_deleted_mailbox_as_nonexistent():
    c = _client()
    _tree(c)
    out = _lines(c.send('l LIST (SUBSCRIBED) "" b/*'))
    assert out == ['* LIST (\\Subscribed) "/" b/test1', '* LIST (\\Subscribed) "/" b/test2/test1',
                   '* LIST (\\Subscribed \\NonExistent) "/" b/test6', '* LIST (\\Subscribed) "/" b/test7/test7',
                   '* LIST (\\Subscribed) "/" b/test8/test8', '* LIST (\\Subscribed) "/" b/test8/test9']
    # LSUB too still lists it (RFC 3501 6.3.6: a subscription is not removed because its mailbox went)
    assert '* LSUB () "/" b/test6' in _lines(c.send('l LSUB "" b/*'))


def test_recreating_a_subscribed_mailbox_keeps_it_subscribed():
    c = _client()
    _tree(c)
    assert c.send("c CREATE b/test6").startswith(b"c OK")
    assert _lines(c.send('l LIST "" b/test6 RETURN (SUBSCRIBED)')) == ['* LIST (\\Subscribed) "/" b/test6']
    assert c.send("c CREATE q/r").startswith(b"c OK")  # a new one is still not subscribed
    assert _lines(c.send('l LIST "" q* RETURN (SUBSCRIBED)')) == ['* LIST () "/" q', '* LIST () "/" q/r']


@pytest.mark.parametrize("args,expected", [
    ('b/test2% RETURN (CHILDREN)', ['* LIST (\\HasChildren) "/" b/test2 (CHILDINFO ("SUBSCRIBED"))']),
    ('(b/test2)', ['* LIST () "/" b/test2 (CHILDINFO ("SUBSCRIBED"))']),
    # the subscribed child is listed itself: no CHILDINFO for its parent
    ('(b/test2 b/test2/test1)', ['* LIST (\\Subscribed) "/" b/test2/test1']),
    ('b*test7', ['* LIST (\\Subscribed) "/" b/test7/test7']),
    ('b*test8', ['* LIST () "/" b/test8 (CHILDINFO ("SUBSCRIBED"))', '* LIST (\\Subscribed) "/" b/test8/test8']),
    ('%', ['* LIST (\\Subscribed) "/" INBOX', '* LIST () "/" b (CHILDINFO ("SUBSCRIBED"))',
           '* LIST (\\Subscribed) "/" Drafts', '* LIST (\\Subscribed) "/" Sent', '* LIST (\\Subscribed) "/" Trash']),
])
def test_recursivematch_reports_subscribed_children_the_patterns_miss(args, expected):
    c = _client()
    _tree(c)
    assert sorted(_lines(c.send(f'l LIST (SUBSCRIBED RECURSIVEMATCH) "" {args}'))) == sorted(expected)


def test_a_subscribed_parent_with_an_unmatched_subscribed_child_gets_both():
    c = _client()
    _tree(c)
    c.send("s SUBSCRIBE b/test8")
    assert _lines(c.send('l LIST (SUBSCRIBED RECURSIVEMATCH) "" b/test8')) == [
        '* LIST (\\Subscribed) "/" b/test8 (CHILDINFO ("SUBSCRIBED"))']


def test_return_options_choose_the_attributes():
    c = _client()
    _tree(c)
    assert _lines(c.send('l LIST "" b/% RETURN (CHILDREN SUBSCRIBED)')) == [
        '* LIST (\\Subscribed \\HasNoChildren) "/" b/test1', '* LIST (\\HasChildren) "/" b/test2',
        '* LIST (\\HasNoChildren) "/" b/test3', '* LIST (\\HasChildren) "/" b/test4',
        '* LIST (\\HasChildren) "/" b/test7', '* LIST (\\HasChildren) "/" b/test8']
    assert _lines(c.send('l LIST () "" b/test%')) == [
        '* LIST () "/" b/test1', '* LIST () "/" b/test2', '* LIST () "/" b/test3', '* LIST () "/" b/test4',
        '* LIST () "/" b/test7', '* LIST () "/" b/test8']


def test_special_use_is_shown_when_asked_for_or_in_a_plain_list():
    c = _client()
    assert '* LIST (\\HasNoChildren \\Sent) "/" Sent' in _lines(c.send('l LIST "" %'))
    assert '* LIST () "/" Sent' in _lines(c.send('l LIST () "" %'))
    assert '* LIST (\\Sent) "/" Sent' in _lines(c.send('l LIST "" % RETURN (SPECIAL-USE)'))
    assert _lines(c.send('l LIST (SPECIAL-USE) "" *')) == [
        '* LIST (\\Drafts) "/" Drafts', '* LIST (\\Sent) "/" Sent', '* LIST (\\Trash) "/" Trash']


def test_a_hole_is_noselect_in_a_plain_list_and_nonexistent_in_an_extended_one():
    c = _client()
    c.send("c CREATE c/d")
    assert c.send("d DELETE c").startswith(b"d OK")
    assert _lines(c.send('l LIST "" c%')) == ['* LIST (\\Noselect \\HasChildren) "/" c']
    assert _lines(c.send('l LIST "" c* RETURN (CHILDREN)')) == [
        '* LIST (\\NonExistent \\HasChildren) "/" c', '* LIST (\\HasNoChildren) "/" c/d']
    # a hole has no STATUS
    assert _lines(c.send('l LIST "" c* RETURN (STATUS (MESSAGES))')) == [
        '* LIST (\\NonExistent) "/" c', '* LIST () "/" c/d', '* STATUS c/d (MESSAGES 0)']


def test_list_status_follows_each_existing_mailbox():
    c = _client()
    c.session.store.deliver(ALICE, make_message(1))
    c.session.store.deliver(ALICE, make_message(2))
    _tree(c)
    out = _lines(c.send('l LIST (SUBSCRIBED) "" * RETURN (STATUS (UNSEEN MESSAGES))'))
    assert out[:2] == ['* LIST (\\Subscribed) "/" INBOX', '* STATUS INBOX (MESSAGES 2 UNSEEN 2)']
    assert '* LIST (\\Subscribed \\NonExistent) "/" b/test6' in out
    assert not any(line.startswith("* STATUS b/test6") for line in out)
    statuses = [line for line in out if line.startswith("* STATUS")]
    assert len(statuses) == len(out) - 1 - len(statuses)  # every LIST line but b/test6's has one


def test_the_empty_pattern_is_special_only_in_a_plain_list():
    c = _client()
    assert _lines(c.send('l LIST "" ""')) == ['* LIST (\\Noselect) "/" ""']
    assert _lines(c.send('l LIST () "" ""')) == []
    assert _lines(c.send('l LIST "" ("")')) == []


def test_bad_options_get_a_tagged_bad_and_the_session_goes_on():
    c = _client()
    assert c.send('l LIST (RECURSIVEMATCH) "" %') == b"l BAD RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE\r\n"
    assert c.send('l LIST "" % RETURN (STATUS (FOO))') == b"l BAD unknown STATUS item FOO\r\n"
    assert c.send("n NOOP") == b"n OK NOOP completed.\r\n"


def test_a_big_tree_is_answered_in_steps_and_whole():
    """3,000 subscriptions under RECURSIVEMATCH: every one is considered, and the session stops between steps
    (a time slice of 0: one step per run) instead of holding the loop for the whole answer."""
    store = MemoryStore()
    store.ensure_user(ALICE)
    c = Client(store, Accounts(USERS), time_slice=0.0)
    c.login()
    for i in range(3000):
        store.set_subscribed(ALICE, f"gone/{i:04d}/x", True)
    out = c.send('l LIST (SUBSCRIBED RECURSIVEMATCH) "" gone/%')
    runs = 1
    while c.session.runnable:
        c.session.proceed()
        out += c.take()
        runs += 1
    assert runs > 3000 // 256
    lines = _lines(out)
    assert len(lines) == 3000
    assert lines[0] == '* LIST (\\NonExistent) "/" gone/0000 (CHILDINFO ("SUBSCRIBED"))'
