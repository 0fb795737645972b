"""The store's small parts: Message-ID extraction, name rules, flag spelling, Maildir file formats."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recall_lab.fake_servers.store import _maildir_files as mf
from recall_lab.fake_servers.store._flags import normalize_flags
from recall_lab.fake_servers.store._msgid import extract_message_id, id_key
from recall_lab.fake_servers.store._names import canonical, parents
from recall_lab.fake_servers.store.base import StoreError

_ID_CHARS = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="<>@\\\""),
                    min_size=1, max_size=20)
_HEADER_NAMES = st.sampled_from(["Subject", "From", "X-Message-ID-Extra", "References", "In-Reply-To"])


@given(left=_ID_CHARS, right=_ID_CHARS, before=st.lists(_HEADER_NAMES, max_size=3),
       name=st.sampled_from(["Message-ID", "message-id", "MESSAGE-ID", "Message-Id"]),
       fold=st.booleans(), eol=st.sampled_from([b"\r\n", b"\n"]))
def test_message_id_matches_the_email_package(left, right, before, name, fold, eol):
    msg_id = f"<{left}@{right}>"
    lines = [f"{h}: value {i}".encode() for i, h in enumerate(before)]
    lines.append(f"{name}:".encode() + (eol + b" " if fold else b" ") + msg_id.encode())
    raw = eol.join(lines) + eol + eol + b"Message-ID: <in-body@x>" + eol
    parsed = message_from_bytes(raw, policy=policy.compat32)[name]
    assert extract_message_id(raw) == msg_id == " ".join(parsed.split())


def test_message_id_edge_cases():
    assert extract_message_id(b"") is None
    assert extract_message_id(b"Subject: x\r\n\r\n") is None
    assert extract_message_id(b"Message-ID:   \r\n\r\n") is None
    assert extract_message_id(b"Message-ID: <a@b>") == "<a@b>"  # header only, no body
    assert extract_message_id(b"X-Message-ID: <no@x>\r\n\r\n") is None
    assert id_key("  < a@b >  ") == "a@b"
    assert id_key("a@b") == "a@b"


@pytest.mark.parametrize(("name", "expected"), [
    ("inbox", "INBOX"), ("Inbox/Sub", "INBOX/Sub"), ("a/b/", "a/b"), ("Sent", "Sent"), ("INBOXES", "INBOXES"),
])
def test_canonical_names(name, expected):
    assert canonical(name) == expected


def test_parents():
    assert parents("a/b/c") == ["a", "a/b"]
    assert parents("a") == []


def test_flags_are_normalised():
    assert normalize_flags(["\\SEEN", "\\answered", "\\Recent", "$Forwarded"]) == {"\\Seen", "\\Answered",
                                                                                   "$Forwarded"}
    assert normalize_flags("\\Seen") == {"\\Seen"}
    for bad in (["\\Nope"], ["two words"], ["br(ace"], [""], ["caf\u00e9"]):
        with pytest.raises(StoreError):
            normalize_flags(bad)


@given(st.frozensets(st.sampled_from(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "a", "b",
                                      "$Junk"])))
def test_maildir_info_round_trip(flags):
    keywords: list[str] = []
    mf.assign_keywords(flags, keywords)
    letters, extra = mf.info_for(flags, keywords)
    assert extra == []
    assert list(letters) == sorted(letters)  # Maildir wants ASCII order
    assert mf.flags_from_name(f"123.M1P1.h,S=5{mf.INFO}{letters}", keywords) == set(flags)


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="/.*%"),
                        min_size=1, max_size=8), min_size=1, max_size=3))
def test_folder_dir_names_round_trip(parts):
    name = "/".join(parts)
    dir_name = mf.folder_dir_name(name)
    assert dir_name.startswith(".") and "/" not in dir_name and dir_name.isascii()
    assert mf.folder_name(dir_name) == name


def test_uidlist_round_trip(tmp_path):
    mf.write_uidlist(tmp_path, 1234, 9, "g" * 32, {3: "a,S=1", 7: "b,S=2"})
    mf.append_uidlist(tmp_path, 9, "c,S=3:2,S")
    assert mf.read_uidlist(tmp_path) == (1234, 10, "g" * 32, {3: "a,S=1", 7: "b,S=2", 9: "c,S=3"})
    (tmp_path / mf.UIDLIST).write_text("1 55 8\n2 x\n")  # Courier's version 1
    assert mf.read_uidlist(tmp_path) == (55, 8, "", {2: "x"})
    (tmp_path / mf.UIDLIST).write_text("garbage\n")
    assert mf.read_uidlist(tmp_path) is None


def test_subscriptions_round_trip(tmp_path):
    names = ["INBOX", "a/b", "tab\there", "Entwürfe"]
    mf.write_subscriptions(tmp_path, names)
    assert mf.read_subscriptions(tmp_path) == names
    (tmp_path / mf.SUBSCRIPTIONS).write_text("INBOX\nSent\n")  # the old one-name-per-line format
    assert mf.read_subscriptions(tmp_path) == ["INBOX", "Sent"]
