"""A keyword reaches a client in `* FLAGS` (and PERMANENTFLAGS) before any FETCH shows it (RFC 3501 7.2.6).

Why every path separately: the keyword can come from this session's own STORE or APPEND, from another
session's STORE, APPEND or COPY, and be seen in a NOOP, an IDLE push, a FETCH, a STORE response or a
SEARCH/NOOP that flushes updates. imaptest's stress mode caught FETCH responses naming a keyword the client
had never been told of; each test here replays one path and checks the whole output stream the way imaptest's
model does: a keyword in a FETCH FLAGS or in PERMANENTFLAGS must already be in the last `* FLAGS`.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS, make_message
from .sansio import Client

_FLAGS = re.compile(rb"^\* FLAGS \(([^)]*)\)", re.M)
_PERMANENT = re.compile(rb"^\* OK \[PERMANENTFLAGS \(([^)]*)\)\]", re.M)
_FETCH_FLAGS = re.compile(rb"^\* \d+ FETCH \(.*?FLAGS \(([^)]*)\)", re.M)
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n")


def _responses(out: bytes) -> list[bytes]:
    """The untagged responses in `out`, one per item, each literal's content replaced by nothing."""
    flat = bytearray()
    pos = 0
    while (m := _LITERAL.search(out, pos)) is not None:
        flat += out[pos:m.start()] + b"{}"
        pos = m.end() + int(m.group(1))
    flat += out[pos:]
    return [line for line in bytes(flat).split(b"\r\n") if line.startswith(b"* ")]


class Watcher:
    """Follows one session's output as imaptest's mailbox model does and records each violation."""

    def __init__(self) -> None:
        self.announced: set[bytes] | None = None
        self.violations: list[bytes] = []
        self.seen_keywords: set[bytes] = set()

    def feed(self, out: bytes) -> bytes:
        for line in _responses(out):
            if (f := _FLAGS.match(line)) is not None:
                self.announced = set(f.group(1).split())
            elif (p := _PERMANENT.match(line)) is not None:
                self._check(line, p.group(1))
            elif (x := _FETCH_FLAGS.match(line)) is not None:
                self._check(line, x.group(1))
        return out

    def _check(self, line: bytes, flags: bytes) -> None:
        keywords = {f for f in flags.split() if not f.startswith(b"\\")}
        self.seen_keywords |= keywords
        if self.announced is None or not keywords <= self.announced:
            self.violations.append(line)


def _setup(n: int = 3) -> tuple[MemoryStore, Client, Client, Watcher]:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    for i in range(1, n + 1):
        store.deliver(ALICE, make_message(i))
    a, b = Client(store, Accounts(USERS)), Client(store, Accounts(USERS))
    watch = Watcher()
    for c in (a, b):
        c.login()
    watch.feed(a.send("s SELECT INBOX"))
    b.send("s SELECT INBOX")
    return store, a, b, watch


def test_fetch_right_after_another_sessions_store_announces_the_keyword_first():
    _, a, b, w = _setup()
    b.send("x STORE 2 +FLAGS (NewOne)")
    out = w.feed(a.send("f FETCH 1:3 (FLAGS)"))
    assert b"NewOne" in out and not w.violations, out


def test_fetch_of_a_body_after_another_sessions_store_announces_first():
    _, a, b, w = _setup()
    b.send("x STORE 1 +FLAGS ($Label4)")
    out = w.feed(a.send("f FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS MODSEQ)"))
    assert b"$Label4" in out and not w.violations, out


def test_noop_and_idle_push_announce_first():
    _, a, b, w = _setup()
    b.send("x STORE 1 +FLAGS (k1)")
    out = w.feed(a.send("n NOOP"))
    assert b"k1" in out and not w.violations, out
    w.feed(a.send("i IDLE"))
    b.send("y STORE 3 +FLAGS (k2)")
    pushed = w.feed(a.take())
    assert b"k2" in pushed and not w.violations, pushed
    w.feed(a.send("DONE"))


def test_own_store_and_store_response_showing_others_keywords():
    _, a, b, w = _setup()
    out = w.feed(a.send("s STORE 1 +FLAGS (mine)"))
    assert b"mine" in out and not w.violations, out
    b.send("x STORE 3 +FLAGS (theirs)")
    out = w.feed(a.send("t STORE 1:3 +FLAGS (\\Flagged)"))
    assert b"theirs" in out and not w.violations, out


def test_append_with_a_new_keyword_by_either_session():
    _, a, b, w = _setup()
    msg = make_message(9)
    out = w.feed(a.send(b"p APPEND INBOX (appended1) {%d+}\r\n%b\r\n" % (len(msg), msg)))
    out += w.feed(a.send("f FETCH 1:* (FLAGS)"))
    assert b"appended1" in out and not w.violations, out
    b.send(b"p APPEND INBOX (appended2) {%d+}\r\n%b\r\n" % (len(msg), msg))
    out = w.feed(a.send("f FETCH 1:* (FLAGS)"))
    out += w.feed(a.send("n NOOP"))
    out += w.feed(a.send("f FETCH 1:* (FLAGS)"))
    assert b"appended2" in out and not w.violations, out


def test_copy_into_the_selected_mailbox():
    store, a, b, w = _setup()
    store.create_mailbox(ALICE, "Other")
    uid = store.deliver(ALICE, make_message(20), mailbox="Other").uid
    store.store_flags(ALICE, "Other", [uid], ["copied"], "add")
    b.send("s SELECT Other")
    b.send("c COPY 1 INBOX")
    out = w.feed(a.send("f FETCH 1:* (FLAGS)"))
    out += w.feed(a.send("n NOOP"))
    assert b"copied" in out and not w.violations, out
    out = w.feed(a.send("s SELECT Other"))
    out += w.feed(a.send("c COPY 1 Other"))
    out += w.feed(a.send("f FETCH 1:* (FLAGS)"))
    assert not w.violations, out


class _ChangingStore(MemoryStore):
    """Another writer changes message 3's flags while this session reads message 1's body: what happens when
    a FETCH is rendered in chunks and other clients run between them."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def fetch_raw(self, user: str, mailbox: str, uid: int) -> bytes:
        self.reads += 1
        if self.reads == 1:
            self.store_flags(user, mailbox, [3], ["late"], "add")
        return super().fetch_raw(user, mailbox, uid)


def test_store_event_in_the_middle_of_a_multi_message_fetch_is_announced_before_the_line():
    store = _ChangingStore()
    for user in USERS:
        store.ensure_user(user)
    for i in range(1, 4):
        store.deliver(ALICE, make_message(i))
    a = Client(store, Accounts(USERS))
    a.login()
    w = Watcher()
    w.feed(a.send("s SELECT INBOX"))
    out = w.feed(a.send("f FETCH 1:3 (BODY.PEEK[] FLAGS)"))
    assert store.reads and b"late" in out and not w.violations, out


_OPS = st.lists(st.tuples(st.sampled_from(["store", "fetch", "noop", "append", "idle", "search"]),
                          st.sampled_from(["a", "b"]), st.integers(1, 3), st.sampled_from(["k1", "k2", "k3"])),
                max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPS)
def test_any_interleaving_of_two_sessions_never_shows_an_unannounced_keyword(ops):
    _, a, b, w = _setup()
    wb = Watcher()
    wb.feed(b.send("s SELECT INBOX"))
    clients = {"a": (a, w), "b": (b, wb)}
    idling: set[str] = set()
    msg = make_message(7)
    for op, who, n, kw in ops:
        c, watch = clients[who]
        other, other_watch = clients["b" if who == "a" else "a"]
        if who in idling:
            watch.feed(c.send("DONE"))
            idling.discard(who)
        if op == "store":
            watch.feed(c.send(f"s STORE {n} +FLAGS ({kw})"))
        elif op == "fetch":
            watch.feed(c.send("f FETCH 1:* (FLAGS)"))
        elif op == "noop":
            watch.feed(c.send("n NOOP"))
        elif op == "search":
            watch.feed(c.send(f"q SEARCH KEYWORD {kw}"))
        elif op == "append":
            watch.feed(c.send(b"p APPEND INBOX (%s) {%d+}\r\n%b\r\n" % (kw.encode(), len(msg), msg)))
        else:
            watch.feed(c.send("i IDLE"))
            idling.add(who)
        other_watch.feed(other.take())  # IDLE pushes land in the other client's output at once
    assert not w.violations and not wb.violations, (w.violations, wb.violations)
