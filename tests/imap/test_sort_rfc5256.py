"""SORT keys by RFC 5256: base subject (section 2.1), sent date (2.2), first address, i;ascii-casemap.

Why a reference implementation in the test: `base_subject` skips work for speed (positions instead of
slices, no re-check of step 3 after step 4); `_reference` below follows the RFC's steps literally, one
regular-expression substitution at a time, and hypothesis checks that both agree on subjects built from the
grammar's pieces.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.errors import ParseError
from recall_lab.fake_servers.imap.sort import ascii_casemap, base_subject, parse_criteria
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS
from .sansio import Client


def _reference(subject: str) -> str:
    """RFC 5256 2.1, step by step as written (quadratic, for tests only)."""
    blob = r"\[[^\[\]\x00]*\] *"
    text = re.sub(r"[ \t\r\n]+", " ", subject)  # (1)
    while True:
        while True:  # (2)
            new = re.sub(r"(?:\(fwd\)| )\Z", "", text, flags=re.I | re.A)
            if new == text:
                break
            text = new
        while True:  # (5) = repeat (3) and (4) until neither applies
            m = re.match(rf"(?:(?:{blob})*(?:re|fwd?) *(?:{blob})?:| )", text, re.I | re.A)  # (3)
            if m:
                text = text[m.end():]
                continue
            m = re.match(blob, text)  # (4)
            if m and text[m.end():]:
                text = text[m.end():]
                continue
            break
        if re.match(r"\[fwd:", text, re.I | re.A) and text.endswith("]") and len(text) >= 6:  # (6)
            text = text[5:-1]
            continue
        return text  # (7)


@pytest.mark.parametrize(("subject", "base"), [
    ("", ""),
    ("a", "a"),
    ("Re: foo", "foo"),
    ("RE: Re: re: foo", "foo"),
    ("Fwd: foo", "foo"),
    ("Fw: foo", "foo"),
    ("fw : foo", "foo"),
    ("Re[2]: foo", "foo"),
    ("Re [2] : foo", "foo"),
    ("[list] Re: foo", "foo"),
    ("[list] foo", "foo"),
    ("[a] [b] foo", "foo"),
    ("[a] [b]", "[b]"),
    ("[xyz]", "[xyz]"),
    ("foo (fwd)", "foo"),
    ("foo(FWD) (fwd)  ", "foo"),
    ("[fwd: foo]", "foo"),
    ("[Fwd: Re: foo (fwd)]", "foo"),
    ("re: [fwd: [fwd: re: [fwd: babylon]]]", "babylon"),
    ("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "b"),
    ("Re: [FWD: c]", "c"),
    ("Ad: Re: Ad: Re: Ad: x", "Ad: Re: Ad: Re: Ad: x"),
    ("Rex: foo", "Rex: foo"),
    ("b (a)", "b (a)"),
    ("Re: [list] [fwd: x]", "x"),
    ("  spaced\t\tout  ", "spaced out"),
    ("Re:", ""),
    ("re:re:", ""),
    ("[fwd: ]", ""),
    ("[fwd:]", ""),  # subj-fwd around an empty subject
    ("[fwd:x", "[fwd:x"),
    ("Re: [fwd: x", "[fwd: x"),
    ("Grüße: Re: x", "Grüße: Re: x"),
])
def test_base_subject_examples(subject, base):
    assert base_subject(subject) == base
    assert _reference(subject) == base


_PIECES = st.sampled_from(["Re", "re", "RE", "Fw", "FWD", "fwd", ":", " ", "  ", "\t", "[", "]", "[fwd:",
                           "[FWD: ", "(fwd)", "(FWD)", "[list]", "[2]", "x", "foo", "babylon", "Ad", "é", "_"])


@given(st.lists(_PIECES, max_size=14).map("".join))
@settings(max_examples=800)
def test_base_subject_matches_the_literal_algorithm(subject):
    assert base_subject(subject) == _reference(subject)


@given(st.text(max_size=60) | st.lists(_PIECES, max_size=14).map("".join))
def test_base_subject_is_a_fixpoint_and_trimmed(subject):
    base = base_subject(subject)
    assert base_subject(base) == base
    assert base == base.strip(" ")


def test_hostile_subjects_stay_linear():
    """Thousands of blobs or nested [fwd: ...]: the quadratic reference would take minutes on these."""
    assert base_subject("[x]" * 20_000 + " y") == "y"
    assert base_subject("[x]" * 20_000) == "[x]"
    assert base_subject("[fwd: " * 10_000 + "z" + "]" * 10_000) == "z"
    assert base_subject("re: " * 20_000 + "q" + " (fwd)" * 5_000) == "q"


def test_ascii_casemap_upper_cases_ascii_only():
    assert ascii_casemap("abc_[") == b"ABC_["
    assert ascii_casemap("é") == "é".encode()
    assert sorted(["_", "[xyz]", "c", "B", "a"], key=ascii_casemap) == ["a", "B", "c", "[xyz]", "_"]


def test_criteria_are_bounded_and_checked():
    with pytest.raises(ParseError):
        parse_criteria(["REVERSE"] * 2 + ["DATE"])
    with pytest.raises(ParseError):
        parse_criteria(["SIZE"] * 1000)
    with pytest.raises(ParseError):
        parse_criteria(["DISPLAYCC"])


# -- through a session -----------------------------------------------------------------------------------------

def _session(*messages: str | tuple[str, str]) -> Client:
    """A session with INBOX selected holding `messages` (text, or (text, ISO INTERNALDATE)); without an
    explicit INTERNALDATE, message i arrived i hours after the first."""
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    first = datetime(2008, 2, 22, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    for i, message in enumerate(messages):
        text, when = message if isinstance(message, tuple) else (message, None)
        internal = datetime.fromisoformat(when) if when else first + timedelta(hours=i)
        store.append(ALICE, "INBOX", text.replace("\n", "\r\n").encode(), (), internal)
    c = Client(store, Accounts(USERS))
    c.login()
    c.send("s SELECT INBOX")
    return c


def _sort(c: Client, criteria: str) -> list[int]:
    out = c.send(f"s SORT ({criteria}) US-ASCII ALL")
    assert out.endswith(b"s OK Sort completed.\r\n"), out
    return [int(n) for n in out.split(b"\r\n")[0].split()[2:]]


def test_sort_by_date_uses_the_full_utc_time_and_falls_back_to_internaldate():
    c = _session(
        "Date: Fri, 22 Feb 2008 00:00:00 +0200\n\n1\n",            # 21 Feb 22:00 UTC
        "Date: Fri, 22 Feb 2008 02:00:00 +0200\n\n2\n",            # 22 Feb 00:00 UTC
        "Date: Thu, 21 Feb 2008 18:30:00 -0500\n\n3\n",            # 21 Feb 23:30 UTC (other zone, same day)
        ("Subject: no Date\n\n4\n", "2008-02-22T01:15:00+02:00"),    # 21 Feb 23:15 UTC, by INTERNALDATE
        ("Date: not a date\n\n5\n", "2008-02-21T21:00:00+00:00"),    # unreadable Date: INTERNALDATE
    )
    assert _sort(c, "DATE") == [5, 1, 4, 3, 2]
    assert _sort(c, "REVERSE DATE") == [2, 3, 4, 1, 5]


def test_sort_by_address_uses_the_first_mailbox_or_the_group_name():
    c = _session(
        "From: user2@domain2.org\nCc: user2@domain2.org (foo bar)\n\n1\n",
        "From: user2@domain1.org\nCc: user2: blah@domain1.org;\n\n2\n",
        "From: user1@domain1.org\nCc: user1@domain1.org\n\n3\n",
        "From: Zed <_under@x.org>\nCc: =?utf-8?q?Z?= <Aaa@x>\n\n4\n",
        "Subject: no addresses\n\n5\n",
    )
    assert _sort(c, "CC") == [5, 4, 3, 1, 2]
    assert _sort(c, "REVERSE CC") == [1, 2, 3, 4, 5]
    assert _sort(c, "CC REVERSE ARRIVAL") == [5, 4, 3, 2, 1]
    assert _sort(c, "FROM") == [5, 3, 1, 2, 4]  # "_" after the letters (upper-cased comparison)


def test_sort_by_subject_uses_the_base_subject_and_ascii_casemap():
    c = _session(*(f"Subject: {s}\n\nx\n" for s in (
        "a", "C", "b", "_", "[xyz]", "re: [fwd: [fwd: re: [fwd: babylon]]]", "=?utf-8?q?RE:_c?=", "Re: B")))
    assert _sort(c, "SUBJECT") == [1, 3, 8, 6, 2, 7, 5, 4]


_HEADER_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40)


@given(st.lists(st.tuples(_HEADER_TEXT, _HEADER_TEXT, _HEADER_TEXT), min_size=1, max_size=4))
@settings(max_examples=80, deadline=None)
def test_any_header_values_sort_without_error(headers):
    c = _session(*(f"Date: {d}\nFrom: {f}\nCc: {f}\nSubject: {s}\n\nx\n" for d, f, s in headers))
    for criteria in ("DATE", "FROM", "CC", "SUBJECT", "REVERSE TO SIZE", "ARRIVAL"):
        assert sorted(_sort(c, criteria)) == list(range(1, len(headers) + 1))
