"""A hypothesis state machine: random store changes (delivery, flags, expunge, another session's commands)
interleaved with one client's commands. The client keeps its own picture of the mailbox from nothing but the
responses (EXISTS, EXPUNGE / VANISHED, FETCH); after every command it must agree with the server, and after a
NOOP it must agree with the store. This checks the sequence-number bookkeeping RFC 3501 7.4.1 depends on."""

from __future__ import annotations

import re

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS, make_message
from .sansio import Client

_UNTAGGED = re.compile(rb"^\* (\d+) (EXISTS|EXPUNGE|FETCH)(.*)$")
_VANISHED = re.compile(rb"^\* VANISHED (\(EARLIER\) )?([\d:,]+)$")


def _uid_set(text: str) -> list[int]:
    out = []
    for piece in text.split(","):
        lo, _, hi = piece.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


class MailboxModel(RuleBasedStateMachine):
    @initialize(qresync=st.booleans(), n=st.integers(0, 5))
    def setup(self, qresync, n):
        self.store = MemoryStore()
        for user in USERS:
            self.store.ensure_user(user)
        for i in range(n):
            self.store.deliver(ALICE, make_message(i))
        self.client = Client(self.store, Accounts(USERS))
        self.client.login()
        self.other = Client(self.store, Accounts(USERS))
        self.other.login()
        self.other.send("o SELECT INBOX")
        self.qresync = qresync
        if qresync:
            self.client.send("e ENABLE QRESYNC")
        out = self.client.send("s SELECT INBOX")
        count = int(re.search(rb"\* (\d+) EXISTS", out).group(1))
        self.view: list[int | None] = [None] * count  # UIDs as the client knows them (None: not fetched yet)
        self.counter = 100
        self.refresh()

    # -- reading responses like a client ------------------------------------------------------------------
    def apply(self, out: bytes, command: str) -> None:
        for line in out.split(b"\r\n"):
            m = _UNTAGGED.match(line)
            if m:
                n, kind, rest = int(m.group(1)), m.group(2), m.group(3)
                if kind == b"EXISTS":
                    assert n >= len(self.view), f"EXISTS shrank the mailbox: {n} < {len(self.view)}"
                    self.view.extend([None] * (n - len(self.view)))
                elif kind == b"EXPUNGE":
                    assert command not in ("FETCH", "STORE", "SEARCH"), f"EXPUNGE during {command}"
                    assert not self.qresync, "EXPUNGE after QRESYNC was enabled"
                    del self.view[n - 1]
                else:
                    assert 1 <= n <= len(self.view), f"FETCH for unknown message {n}"
                    uid = re.search(rb"UID (\d+)", rest)
                    if uid:
                        known = self.view[n - 1]
                        assert known in (None, int(uid.group(1))), f"message {n} changed UID"
                        self.view[n - 1] = int(uid.group(1))
                continue
            m = _VANISHED.match(line)
            if m and not m.group(1):
                assert command not in ("FETCH", "STORE", "SEARCH"), f"VANISHED during {command}"
                assert self.qresync
                for uid in _uid_set(m.group(2).decode()):
                    assert None not in self.view, "VANISHED names a UID the client could not know yet"
                    if uid in self.view:
                        self.view.remove(uid)

    def send(self, text: str, command: str) -> bytes:
        out = self.client.send(text)
        assert b"SERVERBUG" not in out, out
        self.apply(out, command)
        if self.qresync and None in self.view and command != "IDLE" and not text.startswith("r "):
            # a QRESYNC client learns the UIDs of new messages at once, so VANISHED can name them
            self.refresh()
        return out

    def refresh(self) -> None:
        if self.view:
            self.send("r FETCH 1:* (UID)", "FETCH")

    # -- what happens to the mailbox ------------------------------------------------------------------------
    @rule()
    def deliver(self):
        self.counter += 1
        self.store.deliver(ALICE, make_message(self.counter))

    @rule(data=st.data())
    def someone_flags(self, data):
        uids = [r.uid for r in self.store.messages(ALICE, "INBOX")]
        if uids:
            uid = data.draw(st.sampled_from(uids))
            self.store.store_flags(ALICE, "INBOX", [uid], [data.draw(st.sampled_from(["\\Seen", "$K"]))], "add")

    @rule(data=st.data())
    def recall_expunges(self, data):
        uids = [r.uid for r in self.store.messages(ALICE, "INBOX")]
        if uids:
            self.store.expunge(ALICE, "INBOX", data.draw(st.lists(st.sampled_from(uids), max_size=3, unique=True)))

    @rule()
    def other_session_expunges_deleted(self):
        self.other.send("o1 NOOP")
        self.other.send("o2 STORE 1:* +FLAGS.SILENT (\\Deleted)") if self.other.session.selected.uids else None
        self.other.send("o3 EXPUNGE")

    # -- what the client does -------------------------------------------------------------------------------
    @precondition(lambda self: bool(getattr(self, "view", None)))
    @rule(data=st.data())
    def fetch(self, data):
        n = data.draw(st.integers(1, len(self.view)))
        self.send(f"f FETCH {n}:* (UID FLAGS)", "FETCH")

    @precondition(lambda self: bool(getattr(self, "view", None)))
    @rule(data=st.data())
    def store_flag(self, data):
        n = data.draw(st.integers(1, len(self.view)))
        self.send(f"t STORE {n} +FLAGS (\\Flagged)", "STORE")

    @rule()
    def search(self):
        self.send("x SEARCH ALL", "SEARCH")

    @rule()
    def uid_fetch(self):
        self.send("u UID FETCH 1:* (FLAGS)", "UID")

    @rule()
    def noop_then_compare_with_store(self):
        self.send("n NOOP", "NOOP")
        self.refresh()
        assert self.view == [r.uid for r in self.store.messages(ALICE, "INBOX")]

    @rule()
    def idle_round(self):
        self.send("i IDLE", "IDLE")
        self.counter += 1
        self.store.deliver(ALICE, make_message(self.counter))
        self.apply(self.client.take(), "IDLE")
        self.send("DONE", "DONE")

    @invariant()
    def sequence_numbers_agree_with_the_server(self):
        sel = self.client.session.selected
        if sel is not None:
            assert len(self.view) == len(sel.uids)
            for mine, theirs in zip(self.view, sel.uids, strict=True):
                assert mine in (None, theirs)


MailboxModel.TestCase.settings = settings(max_examples=int(__import__("os").environ.get("IMAP_MODEL_EXAMPLES", "60")), stateful_step_count=25,
                                          deadline=None)
TestMailboxModel = MailboxModel.TestCase
