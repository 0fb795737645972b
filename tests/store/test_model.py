"""Property test: the memory store and the Maildir store (restarted now and then) behave identically.

Random sequences of every mutating operation run against both; after each step their answers, raised error
types, published events and whole visible state must be equal (UIDVALIDITY values excepted: both derive them
from the clock, so only their stability is compared). A restart of the Maildir store in the middle of a
sequence must change nothing observable.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from recall_lab.fake_servers.store import MaildirStore, MemoryStore
from recall_lab.fake_servers.store.base import MailboxInfo, StoreError
from tests.store.conftest import ALICE, message

NAMES = st.sampled_from(["INBOX", "inbox", "Sent", "Trash", "a", "a/b", "a/b/c", "B", "INBOX/x", "bad/", "x//y"])
FLAGS = st.frozensets(st.sampled_from(["\\Seen", "\\Deleted", "\\Flagged", "\\Draft", "kw1", "$Label"]),
                      max_size=3)
UIDS = st.lists(st.integers(min_value=1, max_value=10), max_size=4)
IDS = st.integers(min_value=0, max_value=5)
WHEN = st.integers(min_value=0, max_value=10**6).map(
    lambda s: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=s))
ORIGIN = object()


def _info(info: MailboxInfo) -> tuple:
    return (info.name, info.uidnext, info.highestmodseq, info.exists, info.unseen, info.special_use,
            info.subscribed)


def _norm(value):
    if isinstance(value, MailboxInfo):
        return _info(value)
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


class SameBehaviour(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="store-model-")
        self.memory = MemoryStore()
        self.maildir = MaildirStore(self.dir)
        self.events: dict[str, list] = {"memory": [], "maildir": []}
        self.memory.subscribe(self.events["memory"].append)
        self.maildir.subscribe(self.events["maildir"].append)
        self.memory.ensure_user(ALICE)
        self.maildir.ensure_user(ALICE)
        self.uidvalidity: dict[str, dict[str, int]] = {"memory": {}, "maildir": {}}

    def both(self, method: str, *args):
        results = []
        for store in (self.memory, self.maildir):
            try:
                results.append(("ok", _norm(getattr(store, method)(*args))))
            except StoreError as exc:
                results.append(("error", type(exc)))
        assert results[0] == results[1], (method, args, results)
        assert self.events["memory"] == self.events["maildir"], (method, args)
        return results[0]

    @rule(mailbox=NAMES, n=IDS, flags=FLAGS, when=WHEN)
    def append(self, mailbox, n, flags, when):
        self.both("append", ALICE, mailbox, message(n), flags, when, ORIGIN)

    @rule(mailbox=NAMES, uids=UIDS, flags=FLAGS, mode=st.sampled_from(["set", "add", "remove"]),
          since=st.none() | st.integers(min_value=0, max_value=30))
    def store_flags(self, mailbox, uids, flags, mode, since):
        self.both("store_flags", ALICE, mailbox, uids, flags, mode, since, ORIGIN)

    @rule(src=NAMES, uids=UIDS, dest=NAMES, move=st.booleans())
    def copy_or_move(self, src, uids, dest, move):
        self.both("move" if move else "copy", ALICE, src, uids, dest, ORIGIN)

    @rule(mailbox=NAMES, uids=st.none() | UIDS)
    def expunge(self, mailbox, uids):
        self.both("expunge", ALICE, mailbox, uids, ORIGIN)

    @rule(name=NAMES, special=st.sampled_from([None, "\\Archive"]))
    def create(self, name, special):
        self.both("create_mailbox", ALICE, name, special, ORIGIN)

    @rule(name=NAMES)
    def delete(self, name):
        self.both("delete_mailbox", ALICE, name, ORIGIN)

    @rule(old=NAMES, new=NAMES)
    def rename(self, old, new):
        self.both("rename_mailbox", ALICE, old, new, ORIGIN)

    @rule(name=NAMES, on=st.booleans())
    def subscribe(self, name, on):
        self.both("set_subscribed", ALICE, name, on)

    @rule(clean=st.booleans())
    def restart(self, clean):
        if clean:
            self.maildir.close()  # snapshot written; otherwise (a crash) the journal must be replayed
        self.maildir = MaildirStore(self.dir)
        self.maildir.subscribe(self.events["maildir"].append)

    @invariant()
    def same_state(self):
        mem = self.memory.list_mailboxes(ALICE)
        disk = self.maildir.list_mailboxes(ALICE)
        assert [_info(m) for m in mem] == [_info(m) for m in disk]
        assert self.memory.subscriptions(ALICE) == self.maildir.subscriptions(ALICE)
        for info in mem:
            assert self.memory.messages(ALICE, info.name) == self.maildir.messages(ALICE, info.name)
            for rec in self.memory.messages(ALICE, info.name):
                assert self.memory.fetch_raw(ALICE, info.name, rec.uid) == \
                    self.maildir.fetch_raw(ALICE, info.name, rec.uid)
        for n in range(6):
            mid = f"<{n}@corp.example>"
            assert self.memory.find_by_message_id(ALICE, mid) == self.maildir.find_by_message_id(ALICE, mid)
        # UIDVALIDITY: fixed while a mailbox lives (also across restarts); compared per store.
        for kind, infos in (("memory", mem), ("maildir", disk)):
            seen = self.uidvalidity[kind]
            current = {i.name: i.uidvalidity for i in infos}
            for name, value in current.items():
                if name in seen and not self._recreated(kind, name):
                    assert seen[name] == value, (kind, name)
            self.uidvalidity[kind] = current
        for kind in self.events:
            self.events[kind].clear()

    def _recreated(self, kind: str, name: str) -> bool:
        from recall_lab.fake_servers.store.base import MailboxCreated, MailboxRenamed

        return any((isinstance(e, MailboxCreated) and e.mailbox == name)
                   or (isinstance(e, MailboxRenamed) and e.new_name == name) for e in self.events[kind])

    def teardown(self):
        self.maildir.close()
        shutil.rmtree(self.dir, ignore_errors=True)


SameBehaviour.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestSameBehaviour = SameBehaviour.TestCase
