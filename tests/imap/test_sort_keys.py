"""The SORT/THREAD key cache (fake_servers/imap/sort_keys.py), through sessions without sockets.

Why these cases: the cache is only worth having if a second SORT/THREAD reads no header (and answers exactly
as a cold one does, for every key), if one message's keys are never served for another (other users, a
mailbox created again under the same name), if it stays within its bounds however large the headers, and if
the command still runs in steps: one per message whose header is read, few when every key is cached.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.message_commands import KEY_BATCH
from recall_lab.fake_servers.imap.mime.cache import ViewCache
from recall_lab.fake_servers.imap.mime.view import MessageView
from recall_lab.fake_servers.imap.session import ImapSession, SessionConfig
from recall_lab.fake_servers.imap.sort_keys import ADDRESSES, GONE, IDS, SortKeyCache
from recall_lab.fake_servers.store.base import NoSuchMessage
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS
from .sansio import FakeIO

BOB = "bob@corp.example"
_FIRST = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
_NAMES = ("Zed", "amy", "Bob", "=?utf-8?q?=C3=89mile?=", "", "carl")


def _raw(i: int, subject: str | None = None) -> bytes:
    """A message whose every sort key varies with i (some without a Date, Cc or display name)."""
    name = _NAMES[i % len(_NAMES)]
    lines = [f"From: {name} <u{(i * 7) % 11}@corp.example>" if name else f"From: u{i % 5}@corp.example",
             f"To: {_NAMES[(i + 2) % len(_NAMES)]} <t{(i * 3) % 7}@mail.example>",
             f"Subject: {subject if subject is not None else ['Re: ', '', '[list] ', 'Fwd: '][i % 4]}"
             f"topic {(i * 5) % 9}",
             f"Message-ID: <m{i}@corp.example>"]
    if i % 3:
        lines.append(f"Date: Tue, 24 Nov 2026 {(i * 13) % 24:02d}:{i % 60:02d}:00 +0100")
    if i % 2:
        lines.append(f"Cc: c{i % 4}@corp.example")
    if i > 1 and i % 4 == 0:
        lines.append(f"References: <m{i // 2}@corp.example>")
    return ("\r\n".join(lines) + "\r\n\r\n" + "x" * (i * 37 % 500) + "\r\n").encode()


def _store(n: int, user: str = ALICE) -> MemoryStore:
    store = MemoryStore()
    for u in USERS:
        store.ensure_user(u)
    for i in range(n):
        store.append(user, "INBOX", _raw(i), (), _FIRST + timedelta(minutes=(i * 11) % 17))
    return store


class _Session:
    """One session over `cache` (a server's sessions share its ViewCache, and with it the key cache)."""

    def __init__(self, store: MemoryStore, cache: ViewCache, user: str = ALICE, mailbox: str = "INBOX",
                 **config) -> None:
        self.io = FakeIO()
        self.session = ImapSession(store, Accounts(USERS), self.io, SessionConfig(**config), cache)
        self.session.greeting()
        out = self.send(f"l LOGIN {user} {USERS[user]}")
        assert b"l OK" in out, out
        out = self.send(f"s SELECT {mailbox}")
        assert b"s OK" in out, out

    def send(self, line: str) -> bytes:
        self.session.feed(line.encode() + b"\r\n")
        out = bytes(self.io.out)
        self.io.out.clear()
        return out

    def answer(self, command: str) -> str:
        out = self.send(f"t {command}")
        assert out.endswith(b" completed.\r\n") and b"t OK" in out, out
        return out.split(b"\r\n")[0].decode()


_CRITERIA = ("SUBJECT", "REVERSE SUBJECT", "DATE", "REVERSE DATE", "ARRIVAL", "SIZE", "FROM", "TO", "CC",
             "DISPLAYFROM", "REVERSE DISPLAYTO", "CC REVERSE FROM SUBJECT", "SUBJECT REVERSE DATE")


def test_a_second_sort_reads_no_header_and_answers_as_a_cold_one():
    n = 60
    store = _store(n)
    shared = ViewCache()
    first = _Session(store, shared)
    warm_answers = {}
    for criteria in _CRITERIA:
        first.answer(f"UID SORT ({criteria}) UTF-8 ALL")  # fills the keys this criteria list reads
    computed = shared.sort_keys.computed
    assert computed >= n
    other = _Session(store, shared)  # another session of the same server
    for criteria in _CRITERIA:
        warm_answers[criteria] = other.answer(f"UID SORT ({criteria}) UTF-8 ALL")
    for algorithm in ("REFERENCES", "ORDEREDSUBJECT"):
        warm_answers[algorithm] = other.answer(f"UID THREAD {algorithm} UTF-8 ALL")
    assert shared.sort_keys.computed == computed  # not one header read again
    for criteria, answer in warm_answers.items():  # a server with nothing cached answers the same
        cold = _Session(store, ViewCache())
        command = f"UID THREAD {criteria} UTF-8 ALL" if criteria in ("REFERENCES", "ORDEREDSUBJECT") else \
            f"UID SORT ({criteria}) UTF-8 ALL"
        assert cold.answer(command) == answer, criteria


def test_key_groups_are_read_when_a_command_first_needs_them():
    n = 20
    store = _store(n)
    shared = ViewCache()
    c = _Session(store, shared)
    c.answer("SORT (SUBJECT) UTF-8 ALL")
    assert shared.sort_keys.computed == n
    assert all(k.addresses is None and k.ids for k in shared.sort_keys._keys.values())
    c.answer("SORT (DATE SIZE ARRIVAL) UTF-8 ALL")
    assert shared.sort_keys.computed == n  # the subject read gave the date too; size and arrival: the record
    c.answer("SORT (FROM) UTF-8 ALL")
    assert shared.sort_keys.computed == 2 * n
    c.answer("SORT (DISPLAYTO CC) UTF-8 ALL")
    assert shared.sort_keys.computed == 2 * n
    c.answer("THREAD REFERENCES UTF-8 ALL")
    assert shared.sort_keys.computed == 2 * n  # the ids came with the subject


def test_keys_are_never_served_for_another_message():
    """Other users' mailboxes of the same name and UIDs, and a mailbox deleted and created again, are other
    messages: each answer follows its own mailbox's headers."""
    store = MemoryStore()
    for u in USERS:
        store.ensure_user(u)
    for subject in ("b", "a", "c"):
        store.append(ALICE, "INBOX", _raw(0, subject=subject))
    for subject in ("c", "b", "a"):
        store.append(BOB, "INBOX", _raw(0, subject=subject))
    shared = ViewCache()
    assert _Session(store, shared).answer("UID SORT (SUBJECT) UTF-8 ALL") == "* SORT 2 1 3"
    assert _Session(store, shared, user=BOB).answer("UID SORT (SUBJECT) UTF-8 ALL") == "* SORT 3 2 1"
    store.create_mailbox(ALICE, "Box")
    for subject in ("y", "x"):
        store.append(ALICE, "Box", _raw(0, subject=subject))
    assert _Session(store, shared, mailbox="Box").answer("SORT (SUBJECT) UTF-8 ALL") == "* SORT 2 1"
    store.delete_mailbox(ALICE, "Box")
    store.create_mailbox(ALICE, "Box")
    for subject in ("x", "y"):
        store.append(ALICE, "Box", _raw(0, subject=subject))
    assert _Session(store, shared, mailbox="Box").answer("SORT (SUBJECT) UTF-8 ALL") == "* SORT 1 2"


def _view(subject: str) -> MessageView:
    return MessageView(f"Subject: {subject}\r\nFrom: a@b.example\r\n\r\nbody\r\n".encode())


def test_the_cache_is_bounded_by_count_least_recently_used_first():
    cache = SortKeyCache(size=5)
    for i in range(10):
        cache.get(("u", "INBOX", 1, i), lambda key: _view(f"s{key[3]}"))
        if i >= 2:
            cache.get(("u", "INBOX", 1, 0), lambda key: _view("never read again"))  # kept in use
    assert len(cache) == 5
    computed = cache.computed
    assert cache.get(("u", "INBOX", 1, 0), lambda key: _view("other")).subject == "s0"
    assert cache.get(("u", "INBOX", 1, 9), lambda key: _view("other")).subject == "s9"
    assert cache.computed == computed
    assert cache.get(("u", "INBOX", 1, 1), lambda key: _view("read again")).subject == "read again"


def test_the_cache_is_bounded_by_bytes_however_long_the_headers():
    cache = SortKeyCache(max_bytes=300_000)
    for i in range(20):
        cache.get(("u", "INBOX", 1, i), lambda key: _view("long " * 20_000), frozenset({ADDRESSES, IDS}))
        assert cache.total_weight <= 300_000 or len(cache) == 1
    weights = [k.weight for k in cache._keys.values()]
    assert min(weights) > 20_000  # a long subject weighs what it holds (as read: up to max_value_bytes)
    assert cache.total_weight == sum(weights) <= 300_000
    assert 1 <= len(cache) < 20


def test_a_message_gone_before_its_keys_are_read_sorts_by_its_record_and_is_not_kept():
    cache = SortKeyCache()

    def gone(key: tuple) -> MessageView:
        raise NoSuchMessage("expunged")

    assert cache.get(("u", "INBOX", 1, 1), gone, frozenset({IDS})) is GONE
    assert len(cache) == 0


def _steps(c: _Session, command: str) -> tuple[int, str]:
    """How many steps `command` took (a session with a zero time slice runs one step per turn)."""
    out = c.send(f"t {command}")
    steps = 1
    while c.session.runnable:
        c.session.proceed()
        out += bytes(c.io.out)
        c.io.out.clear()
        steps += 1
    assert out.endswith(b" completed.\r\n"), out
    return steps, out.split(b"\r\n")[0].decode()


@pytest.mark.parametrize("command", ["UID SORT (REVERSE FROM) UTF-8 ALL", "UID THREAD REFERENCES UTF-8 ALL"])
def test_a_step_per_header_read_and_few_once_cached(command):
    n = 3 * KEY_BATCH
    store = _store(n)
    shared = ViewCache()
    c = _Session(store, shared, time_slice=0.0)
    cold_steps, cold = _steps(c, command)
    warm_steps, warm = _steps(c, command)
    assert warm == cold
    assert cold_steps > n  # each header read is a step of its own: other clients are served in between
    assert warm_steps < n // 8  # the search and the cached keys go KEY_BATCH messages per step
