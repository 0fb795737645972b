"""CONTEXT=SEARCH (RFC 5267): `SEARCH RETURN (UPDATE)` contexts kept up to date with ADDTO / REMOVEFROM as
flags change and messages arrive or are expunged, CANCELUPDATE, the per-session bound, and the same over a
real socket while the client idles.

Why these cases: a context is only useful if its numbers agree with the client's view at every line, so the
tests replay each update against a model of the client's result (a REMOVEFROM for an expunged message comes
just before that message's EXPUNGE, numbered as it is then); and a context costs the server work on every
change, so the bound must hold and a search beyond it must say NOUPDATE (an untagged NO warning) instead of
silently not updating.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.esearch import MAX_CONTEXTS
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS, Lab, make_message
from .rawclient import Raw
from .sansio import Client, response_lines, selected_client

_UPDATE = re.compile(r'\* ESEARCH \(TAG "([^"]+)"\)( UID)? (ADDTO|REMOVEFROM) \(0 ([\d:,]+)\)')


def _store(n: int = 5) -> MemoryStore:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    for i in range(1, n + 1):
        store.deliver(ALICE, make_message(i, subject=f"s{i}"))
    return store


def _client(store: MemoryStore) -> Client:
    return selected_client(store, Accounts(USERS))


_lines = response_lines


def _numbers(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


class Model:
    """What a client knows: its sequence of UIDs (from EXISTS with UID FETCH, EXPUNGE) and each context's
    result, updated line by line exactly as RFC 5267 says a client should."""

    def __init__(self, uids: list[int]) -> None:
        self.uids = list(uids)
        self.results: dict[str, set[int]] = {}  # tag -> UIDs

    def apply(self, out: bytes, new_uids: list[int] | None = None) -> None:
        for line in _lines(out):
            if (m := re.fullmatch(r"\* (\d+) EXPUNGE", line)) is not None:
                del self.uids[int(m.group(1)) - 1]
            elif (m := re.fullmatch(r"\* (\d+) EXISTS", line)) is not None:
                assert new_uids is not None and len(self.uids) + len(new_uids) == int(m.group(1))
                self.uids.extend(new_uids)
            elif (m := _UPDATE.fullmatch(line)) is not None:
                tag, uid, verb, numbers = m.groups()
                found = _numbers(numbers)
                uids = found if uid else [self.uids[n - 1] for n in found]
                result = self.results[tag]
                if verb == "ADDTO":
                    assert not result & set(uids), line
                    result |= set(uids)
                else:
                    assert set(uids) <= result, line
                    result -= set(uids)


def _seen(store: MemoryStore) -> set[int]:
    return {r.uid for r in store.messages(ALICE, "INBOX") if "\\Seen" in r.flags}


def test_updates_follow_flags_expunges_and_arrivals() -> None:
    store = _store()
    a = _client(store)
    b = _client(store)
    model = Model([1, 2, 3, 4, 5])
    assert _lines(a.send('t1 SEARCH RETURN (UPDATE) SEEN')) == ['* ESEARCH (TAG "t1")', "t1 OK Search completed."]
    assert _lines(a.send('t2 UID SEARCH RETURN (UPDATE ALL) OR SEEN SUBJECT s2')) == \
        ['* ESEARCH (TAG "t2") UID ALL 2', "t2 OK Search completed."]
    model.results = {"t1": set(), "t2": {2}}

    out = a.send("a STORE 1,2,4 +FLAGS (\\Seen)")
    assert '* ESEARCH (TAG "t1") ADDTO (0 1:2,4)' in _lines(out)
    assert '* ESEARCH (TAG "t2") UID ADDTO (0 1,4)' in _lines(out)
    model.apply(out)

    b.send("b STORE 1,2 -FLAGS (\\Seen)")  # another session: reported at a's next command
    out = a.send("n NOOP")
    assert '* ESEARCH (TAG "t1") REMOVEFROM (0 1:2)' in _lines(out)
    assert '* ESEARCH (TAG "t2") UID REMOVEFROM (0 1)' in _lines(out)
    model.apply(out)

    a.send("c STORE 3:5 +FLAGS.SILENT (\\Deleted)")
    out = a.send("e EXPUNGE")
    # message 4 is announced as number 3 after message 3's EXPUNGE: its REMOVEFROM says 3, just before it
    assert _lines(out)[:3] == ["* 3 EXPUNGE", '* ESEARCH (TAG "t1") REMOVEFROM (0 3)',
                               '* ESEARCH (TAG "t2") UID REMOVEFROM (0 4)']
    model.apply(out)

    uid = store.append(ALICE, "INBOX", make_message(9), flags={"\\Seen"}).uid
    out = a.send("n NOOP")
    assert _lines(out)[0] == "* 3 EXISTS"
    assert '* ESEARCH (TAG "t1") ADDTO (0 3)' in _lines(out)
    model.apply(out, [uid])
    assert model.results["t1"] == _seen(store)
    assert model.results["t2"] == _seen(store) | {2}


def test_no_update_for_an_unchanged_result_or_a_cancelled_context() -> None:
    store = _store()
    a = _client(store)
    a.send("t1 SEARCH RETURN (UPDATE COUNT) SEEN")
    assert "ESEARCH" not in a.send("a STORE 1 +FLAGS (\\Flagged)").decode()
    assert _lines(a.send('c CANCELUPDATE "t1"')) == ["c OK Updates cancelled."]
    assert "ESEARCH" not in a.send("a STORE 1 +FLAGS (\\Seen)").decode()
    assert _lines(a.send('c CANCELUPDATE "t1"'))[0].startswith("c NO Unknown tag")
    assert _lines(a.send("c CANCELUPDATE"))[0].startswith("c BAD")


def test_a_new_selection_drops_the_contexts() -> None:
    store = _store()
    a = _client(store)
    a.send("t1 SEARCH RETURN (UPDATE) SEEN")
    a.send("s SELECT INBOX")
    assert "ESEARCH" not in a.send("a STORE 1 +FLAGS (\\Seen)").decode()
    assert _lines(a.send('c CANCELUPDATE "t1"'))[0].startswith("c NO")
    a.send("u UNSELECT")
    assert _lines(a.send('c CANCELUPDATE "t1"'))[0].startswith("c BAD")  # not in the authenticated state


def test_contexts_are_bounded_per_session() -> None:
    store = _store()
    a = _client(store)
    for i in range(MAX_CONTEXTS):
        assert "NOUPDATE" not in a.send(f"k{i} SEARCH RETURN (UPDATE) SEEN").decode()
    out = _lines(a.send("over SEARCH RETURN (UPDATE COUNT) SEEN"))
    assert out[0] == '* ESEARCH (TAG "over") COUNT 0'
    assert out[1].startswith('* NO [NOUPDATE "over"]')
    assert out[2] == "over OK Search completed."
    out = a.send("a STORE 1 +FLAGS (\\Seen)").decode()
    assert out.count("ADDTO") == MAX_CONTEXTS and '"over"' not in out
    a.send('c CANCELUPDATE "k0"')
    assert "NOUPDATE" not in a.send("again SEARCH RETURN (UPDATE) SEEN").decode()


def test_qresync_removefrom_comes_before_vanished() -> None:
    store = _store()
    a = Client(store, Accounts(USERS))
    a.login()
    a.send("e ENABLE QRESYNC")
    a.send("s SELECT INBOX")
    a.send("a STORE 2,4 +FLAGS (\\Seen)")
    a.send("t1 SEARCH RETURN (UPDATE) SEEN")
    a.send("d STORE 1:4 +FLAGS.SILENT (\\Deleted)")
    lines = _lines(a.send("x EXPUNGE"))
    assert lines[0] == '* ESEARCH (TAG "t1") REMOVEFROM (0 2)'
    assert lines[1] == '* ESEARCH (TAG "t1") REMOVEFROM (0 4)'
    assert lines[2] == "* VANISHED 1:4"


def test_expunges_wait_during_search() -> None:
    """A message expunged by another session is not reported (nor its REMOVEFROM) during FETCH/SEARCH."""
    store = _store()
    a = _client(store)
    a.send("a STORE 5 +FLAGS (\\Seen)")
    a.send("t1 SEARCH RETURN (UPDATE) SEEN")
    store.expunge(ALICE, "INBOX", [5])
    out = a.send("f FETCH 1 (UID)").decode()
    assert "EXPUNGE" not in out and "ESEARCH" not in out
    assert _lines(a.send("n NOOP"))[:2] == ['* ESEARCH (TAG "t1") REMOVEFROM (0 5)', "* 5 EXPUNGE"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["seen", "unseen", "expunge", "deliver", "other"]),
                          st.integers(0, 9)), max_size=12))
def test_updates_keep_the_client_in_step(steps: list[tuple[str, int]]) -> None:
    """Whatever happens to the mailbox, a client that applies the updates knows both results exactly."""
    store = _store(6)
    a = _client(store)
    b = _client(store)
    model = Model([r.uid for r in store.messages(ALICE, "INBOX")])
    a.send("t1 SEARCH RETURN (UPDATE) SEEN")
    a.send("t2 UID SEARCH RETURN (UPDATE) UNSEEN")
    model.results = {"t1": set(), "t2": set(model.uids)}
    delivered: list[int] = []
    for action, k in steps:
        count = len(model.uids)
        if action == "deliver":
            delivered.append(store.deliver(ALICE, make_message(20 + k)).uid)
            continue
        if count == 0:
            continue
        n = k % count + 1
        if action == "seen":
            out = a.send(f"x STORE {n} +FLAGS (\\Seen)")
        elif action == "unseen":
            out = a.send(f"x STORE {n} -FLAGS (\\Seen)")
        elif action == "other":
            b.send("n NOOP")
            b.send(f"x UID STORE {model.uids[n - 1]} +FLAGS (\\Seen)")
            out = a.send("n NOOP")
        else:
            out = a.send(f"x STORE {n} +FLAGS.SILENT (\\Deleted)")
            if b"EXISTS" in out:
                model.apply(out, delivered)
                delivered = []
            out = a.send("x EXPUNGE")
        model.apply(out, delivered)
        if b"EXISTS" in out:
            delivered = []
    out = a.send("n NOOP")
    model.apply(out, delivered)
    records = store.messages(ALICE, "INBOX")
    assert model.uids == [r.uid for r in records]
    assert model.results["t1"] == _seen(store)
    assert model.results["t2"] == {r.uid for r in records} - _seen(store)


async def test_updates_reach_an_idling_client(imap: Lab) -> None:
    for n in range(1, 4):
        imap.deliver(n)
    raw = await Raw.connect(imap.host, imap.port)
    try:
        await raw.command(b"l", f"LOGIN {ALICE} {USERS[ALICE]}".encode())
        await raw.command(b"s", b"SELECT INBOX")
        lines = await raw.command(b"t1", b"UID SEARCH RETURN (UPDATE MIN) FLAGGED")
        assert lines[0] == b'* ESEARCH (TAG "t1") UID\r\n'
        await raw.send(b"i IDLE\r\n")
        assert (await raw.line()).startswith(b"+ ")
        imap.store.store_flags(ALICE, "INBOX", [2], {"\\Flagged"}, "add")
        seen = [await raw.line(), await raw.line()]
        assert b'* ESEARCH (TAG "t1") UID ADDTO (0 2)\r\n' in seen
        await raw.send(b"DONE\r\n")
        await raw.until_tagged(b"i")
    finally:
        await raw.close()


@pytest.mark.parametrize("command", ['CANCELUPDATE "a" "b" x', "CANCELUPDATE (a)", "CANCELUPDATE " + ' "a"' * 101])
def test_bad_cancelupdate(command: str) -> None:
    a = _client(_store())
    lines = _lines(a.send(f"c {command}"))
    assert len(lines) == 1 and re.match(r"c (BAD|NO) ", lines[0]), lines
