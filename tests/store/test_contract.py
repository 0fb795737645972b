"""The MailStore contract (fake_servers/store/base.py), run against the memory and the Maildir store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from recall_lab.fake_servers.store.base import (
    DEFAULT_MAILBOXES,
    FlagsChanged,
    MailboxCreated,
    MailboxDeleted,
    MailboxExists,
    MailboxRenamed,
    MessageAppended,
    MessageLocation,
    MessagesExpunged,
    NoSuchMailbox,
    NoSuchMessage,
    NoSuchUser,
    StoreError,
)
from tests.store.conftest import ALICE, BOB, message

ORIGIN = object()


# -- accounts and mailboxes ------------------------------------------------------------------------------
def test_ensure_user_creates_default_mailboxes_and_is_idempotent(store):
    names = [m.name for m in store.list_mailboxes(ALICE)]
    assert names[0] == "INBOX"
    assert sorted(names) == sorted(DEFAULT_MAILBOXES)
    assert {m.name: m.special_use for m in store.list_mailboxes(ALICE)} == DEFAULT_MAILBOXES
    store.ensure_user(ALICE)
    store.ensure_user("ALICE@Corp.Example ")
    assert [m.name for m in store.list_mailboxes(ALICE)] == names
    assert store.users() == [ALICE]
    assert all(m.subscribed for m in store.list_mailboxes(ALICE))


def test_unknown_user_and_mailbox_raise_friendly_errors(store):
    with pytest.raises(NoSuchUser, match="nobody@corp.example"):
        store.list_mailboxes("nobody@corp.example")
    with pytest.raises(NoSuchMailbox, match="Nope"):
        store.mailbox(ALICE, "Nope")
    with pytest.raises(NoSuchMailbox):
        store.append(ALICE, "Nope", message(1))
    with pytest.raises(NoSuchMessage):
        store.fetch_raw(ALICE, "INBOX", 99)
    with pytest.raises(NoSuchMessage):
        store.get(ALICE, "INBOX", 99)


@pytest.mark.parametrize("bad", ["", "a//b", "/a", "a*", "a%b", "a\x00b", "a\rb"])
def test_invalid_mailbox_names_are_refused(store, bad):
    with pytest.raises(StoreError):
        store.create_mailbox(ALICE, bad)


def test_inbox_is_case_insensitive_and_other_names_are_not(store):
    store.deliver(ALICE, message(1))
    assert store.mailbox(ALICE, "inbox").exists == 1
    assert store.mailbox(ALICE, "InBoX").name == "INBOX"
    store.create_mailbox(ALICE, "inbox/child")
    assert store.mailbox(ALICE, "INBOX/child").name == "INBOX/child"
    with pytest.raises(MailboxExists):
        store.create_mailbox(ALICE, "Inbox")
    store.create_mailbox(ALICE, "work")
    store.create_mailbox(ALICE, "Work")
    assert {"work", "Work"} <= {m.name for m in store.list_mailboxes(ALICE)}


def test_create_makes_parents_and_events(store, events):
    info = store.create_mailbox(ALICE, "a/b/c", origin=ORIGIN)
    assert info.name == "a/b/c" and info.exists == 0 and info.uidnext == 1
    assert [e.mailbox for e in events if isinstance(e, MailboxCreated)] == ["a", "a/b", "a/b/c"]
    assert all(e.origin is ORIGIN and e.user == ALICE for e in events)
    with pytest.raises(MailboxExists):
        store.create_mailbox(ALICE, "a/b")
    store.create_mailbox(ALICE, "x/", special_use="\\Junk")
    assert store.mailbox(ALICE, "x").special_use == "\\Junk"
    with pytest.raises(StoreError):
        store.create_mailbox(ALICE, "y", special_use="\\Bogus")


def test_list_is_sorted_inbox_first(store):
    for name in ("zeta", "Alpha", "beta/gamma"):
        store.create_mailbox(ALICE, name)
    names = [m.name for m in store.list_mailboxes(ALICE)]
    assert names[0] == "INBOX"
    assert names[1:] == sorted(names[1:])


def test_delete_mailbox_keeps_children_and_refuses_inbox(store, events):
    store.create_mailbox(ALICE, "p/q")
    store.append(ALICE, "p", message(1))
    store.delete_mailbox(ALICE, "p", origin=ORIGIN)
    assert events[-1] == MailboxDeleted(ALICE, "p", ORIGIN)
    names = {m.name for m in store.list_mailboxes(ALICE)}
    assert "p" not in names and "p/q" in names
    assert store.find_by_message_id(ALICE, "<1@corp.example>") == []
    assert "p" not in store.subscriptions(ALICE)
    with pytest.raises(StoreError):
        store.delete_mailbox(ALICE, "inbox")
    with pytest.raises(NoSuchMailbox):
        store.delete_mailbox(ALICE, "p")


def test_recreated_mailbox_gets_new_uidvalidity_and_never_reuses_uids(store):
    store.create_mailbox(ALICE, "box")
    first = store.mailbox(ALICE, "box").uidvalidity
    for n in range(3):
        store.append(ALICE, "box", message(n))
    store.delete_mailbox(ALICE, "box")
    again = store.create_mailbox(ALICE, "box")
    assert again.uidvalidity != first
    assert again.uidvalidity > first
    assert store.append(ALICE, "box", message(9)).uid == 4


def test_rename_moves_children_subscriptions_and_index(store, events):
    store.create_mailbox(ALICE, "old/kid")
    store.append(ALICE, "old/kid", message(1))
    uidvalidity = store.mailbox(ALICE, "old/kid").uidvalidity
    events.clear()
    store.rename_mailbox(ALICE, "old", "new/name", origin=ORIGIN)
    names = {m.name for m in store.list_mailboxes(ALICE)}
    assert {"new", "new/name", "new/name/kid"} <= names and not {"old", "old/kid"} & names
    assert store.mailbox(ALICE, "new/name/kid").uidvalidity == uidvalidity
    assert store.find_by_message_id(ALICE, "1@corp.example") == [MessageLocation("new/name/kid", 1)]
    assert "new/name/kid" in store.subscriptions(ALICE) and "old/kid" not in store.subscriptions(ALICE)
    renamed = [(e.mailbox, e.new_name) for e in events if isinstance(e, MailboxRenamed)]
    assert renamed == [("old", "new/name"), ("old/kid", "new/name/kid")]
    assert [e.mailbox for e in events if isinstance(e, MailboxCreated)] == ["new"]


def test_rename_errors(store):
    store.create_mailbox(ALICE, "a")
    store.create_mailbox(ALICE, "b")
    with pytest.raises(MailboxExists):
        store.rename_mailbox(ALICE, "a", "b")
    with pytest.raises(MailboxExists):
        store.rename_mailbox(ALICE, "a", "INBOX")
    with pytest.raises(NoSuchMailbox):
        store.rename_mailbox(ALICE, "zz", "yy")
    with pytest.raises(StoreError):
        store.rename_mailbox(ALICE, "a", "a/inside")


def test_rename_inbox_moves_messages_and_leaves_inbox_empty(store, events):
    for n in range(3):
        store.deliver(ALICE, message(n))
    store.store_flags(ALICE, "INBOX", [2], ["\\Seen"])
    before = store.mailbox(ALICE, "INBOX")
    events.clear()
    store.rename_mailbox(ALICE, "INBOX", "Archive/2026", origin=ORIGIN)
    after = store.mailbox(ALICE, "INBOX")
    assert after.exists == 0 and after.uidvalidity == before.uidvalidity and after.uidnext == before.uidnext
    moved = store.messages(ALICE, "Archive/2026")
    assert [r.uid for r in moved] == [1, 2, 3]
    assert [r.flags for r in moved] == [frozenset(), {"\\Seen"}, frozenset()]
    assert store.find_by_message_id(ALICE, "<1@corp.example>") == [MessageLocation("Archive/2026", 2)]
    expunged = [e for e in events if isinstance(e, MessagesExpunged)]
    assert [(e.mailbox, e.uids) for e in expunged] == [("INBOX", (1, 2, 3))]
    store.deliver(ALICE, message(7))
    assert store.messages(ALICE, "INBOX")[0].uid == 4


def test_subscriptions(store):
    store.create_mailbox(ALICE, "news")
    assert "news" in store.subscriptions(ALICE)
    store.set_subscribed(ALICE, "news", False)
    assert "news" not in store.subscriptions(ALICE)
    assert store.mailbox(ALICE, "news").subscribed is False
    store.set_subscribed(ALICE, "news", True)
    store.set_subscribed(ALICE, "news", True)
    assert store.subscriptions(ALICE).count("news") == 1
    store.set_subscribed(ALICE, "inbox", False)
    assert "INBOX" not in store.subscriptions(ALICE)
    assert store.subscriptions(ALICE) == sorted(store.subscriptions(ALICE), key=lambda n: (n != "INBOX", n))


# -- messages ------------------------------------------------------------------------------------------
def test_append_returns_record_and_emits_event(store, events):
    when = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=timezone(timedelta(hours=2)))
    raw = message(1)
    rec = store.append(ALICE, "inbox", raw, ["\\seen", "$Label1", "\\Recent"], when, origin=ORIGIN)
    assert rec.uid == 1 and rec.size == len(raw) and rec.message_id == "<1@corp.example>"
    assert rec.flags == {"\\Seen", "$Label1"}
    assert rec.internaldate == when.replace(microsecond=0)
    assert rec.modseq == store.mailbox(ALICE, "INBOX").highestmodseq
    assert events == [MessageAppended(ALICE, "INBOX", rec, ORIGIN)]
    assert store.fetch_raw(ALICE, "INBOX", 1) == raw
    assert store.messages(ALICE, "INBOX") == [rec]
    assert store.get(ALICE, "INBOX", 1) == rec
    info = store.mailbox(ALICE, "INBOX")
    assert (info.exists, info.unseen, info.uidnext) == (1, 0, 2)


def test_append_defaults_and_bad_input(store):
    before = datetime.now(UTC).replace(microsecond=0)
    rec = store.deliver(ALICE, message(1, mid=""))
    assert rec.message_id is None and rec.flags == frozenset()
    assert before - timedelta(seconds=1) <= rec.internaldate <= datetime.now(UTC)
    assert store.mailbox(ALICE, "INBOX").unseen == 1
    with pytest.raises(StoreError):
        store.append(ALICE, "INBOX", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        store.append(ALICE, "INBOX", message(2), ["\\Bogus"])
    with pytest.raises(StoreError):
        store.append(ALICE, "INBOX", message(2), ["bad keyword"])
    assert store.mailbox(ALICE, "INBOX").exists == 1


def test_raw_bytes_are_kept_exactly(store):
    raw = b"Subject: \xe9t\xe9\nMessage-ID: <lf@x>\n\nbare LF body\nno final newline"
    rec = store.deliver(ALICE, raw)
    assert store.fetch_raw(ALICE, "INBOX", rec.uid) == raw
    assert rec.size == len(raw) and rec.message_id == "<lf@x>"


def test_uids_ascend_and_are_never_reused(store):
    uids = [store.deliver(ALICE, message(n)).uid for n in range(5)]
    assert uids == [1, 2, 3, 4, 5]
    store.expunge(ALICE, "INBOX", [4, 5])
    assert store.deliver(ALICE, message(6)).uid == 6
    assert [r.uid for r in store.messages(ALICE, "INBOX")] == [1, 2, 3, 6]
    assert [r.uid for r in store.uid_range(ALICE, "INBOX", 2, 5)] == [2, 3]
    assert [r.uid for r in store.uid_range(ALICE, "INBOX", 3)] == [3, 6]
    assert store.uid_range(ALICE, "INBOX", 7) == []


def test_store_flags_modes_modseq_and_events(store, events):
    for n in range(3):
        store.deliver(ALICE, message(n))
    events.clear()
    start = store.mailbox(ALICE, "INBOX").highestmodseq
    up = store.store_flags(ALICE, "INBOX", [3, 1, 99, 1], ["\\Seen"], "add", origin=ORIGIN)
    assert [r.uid for r in up.changed] == [1, 3] and up.unchanged == () and up.failed_modified == ()
    assert [r.modseq for r in up.changed] == [start + 1, start + 2]
    assert events == [FlagsChanged(ALICE, "INBOX", r, ORIGIN) for r in up.changed]
    again = store.store_flags(ALICE, "INBOX", [1], ["\\SEEN"], "add")
    assert again.changed == () and [r.uid for r in again.unchanged] == [1]
    assert len(events) == 2 and store.mailbox(ALICE, "INBOX").highestmodseq == start + 2
    store.store_flags(ALICE, "INBOX", [1], ["\\Flagged", "Work"], "set")
    assert store.get(ALICE, "INBOX", 1).flags == {"\\Flagged", "Work"}
    store.store_flags(ALICE, "INBOX", [1], ["work", "Work"], "remove")
    assert store.get(ALICE, "INBOX", 1).flags == {"\\Flagged"}
    assert store.mailbox(ALICE, "INBOX").unseen == 2
    with pytest.raises(StoreError):
        store.store_flags(ALICE, "INBOX", [1], ["\\Seen"], "toggle")  # type: ignore[arg-type]


def test_unchanged_since(store):
    for n in range(2):
        store.deliver(ALICE, message(n))
    store.store_flags(ALICE, "INBOX", [2], ["\\Seen"])
    ms1, ms2 = (r.modseq for r in store.messages(ALICE, "INBOX"))
    up = store.store_flags(ALICE, "INBOX", [1, 2], ["\\Flagged"], "add", unchanged_since=ms1)
    assert [r.uid for r in up.changed] == [1] and up.failed_modified == (2,)
    assert store.get(ALICE, "INBOX", 2).modseq == ms2


def test_copy_keeps_flags_and_date_and_emits_appends(store, events):
    store.create_mailbox(ALICE, "Keep")
    when = datetime(2025, 5, 5, 5, 5, 5, tzinfo=UTC)
    store.append(ALICE, "INBOX", message(1), ["\\Seen", "tag"], when)
    store.append(ALICE, "INBOX", message(2))
    events.clear()
    pairs = store.copy(ALICE, "INBOX", [2, 1, 42], "Keep", origin=ORIGIN)
    assert pairs == [(1, 1), (2, 2)]
    copied = store.messages(ALICE, "Keep")
    assert copied[0].flags == {"\\Seen", "tag"} and copied[0].internaldate == when
    assert store.fetch_raw(ALICE, "Keep", 2) == message(2)
    assert [type(e) for e in events] == [MessageAppended, MessageAppended]
    assert all(e.mailbox == "Keep" and e.origin is ORIGIN for e in events)
    assert store.find_by_message_id(ALICE, "<1@corp.example>") == [
        MessageLocation("INBOX", 1), MessageLocation("Keep", 1)]
    with pytest.raises(NoSuchMailbox):
        store.copy(ALICE, "INBOX", [1], "Nowhere")


def test_move_is_copy_then_one_expunge(store, events):
    for n in range(3):
        store.deliver(ALICE, message(n))
    events.clear()
    pairs = store.move(ALICE, "INBOX", [1, 3], "Trash", origin=ORIGIN)
    assert pairs == [(1, 1), (3, 2)]
    assert [type(e) for e in events] == [MessageAppended, MessageAppended, MessagesExpunged]
    assert events[-1].uids == (1, 3) and events[-1].modseq == store.mailbox(ALICE, "INBOX").highestmodseq
    assert [r.uid for r in store.messages(ALICE, "INBOX")] == [2]
    assert store.find_by_message_id(ALICE, "<0@corp.example>") == [MessageLocation("Trash", 1)]


def test_expunge_deleted_or_by_uid(store, events):
    for n in range(4):
        store.deliver(ALICE, message(n))
    store.store_flags(ALICE, "INBOX", [2, 3], ["\\Deleted"])
    events.clear()
    assert store.expunge(ALICE, "INBOX", origin=ORIGIN) == [2, 3]
    modseq = store.mailbox(ALICE, "INBOX").highestmodseq
    assert events == [MessagesExpunged(ALICE, "INBOX", (2, 3), modseq, ORIGIN)]
    assert store.expunge(ALICE, "INBOX") == []
    assert store.expunge(ALICE, "INBOX", [4, 1, 77]) == [1, 4]
    assert len(events) == 2 and store.mailbox(ALICE, "INBOX").exists == 0
    assert store.find_by_message_id(ALICE, "<1@corp.example>") == []


def test_modseq_strictly_increases_over_every_change(store):
    seen = [store.mailbox(ALICE, "INBOX").highestmodseq]

    def step() -> None:
        now = store.mailbox(ALICE, "INBOX").highestmodseq
        assert now > seen[-1]
        seen.append(now)

    store.deliver(ALICE, message(1))
    step()
    store.store_flags(ALICE, "INBOX", [1], ["\\Seen"])
    step()
    store.deliver(ALICE, message(2))
    step()
    store.expunge(ALICE, "INBOX", [1])
    step()
    store.move(ALICE, "Sent", [], "INBOX")
    assert store.mailbox(ALICE, "INBOX").highestmodseq == seen[-1]


def test_message_id_index(store):
    store.deliver(ALICE, message(1, mid="  <Same@Example>  "))
    store.append(ALICE, "Sent", message(2, mid="<Same@Example>"))
    store.deliver(ALICE, message(3, mid="<same@example>"))
    assert store.find_by_message_id(ALICE, "<Same@Example>") == [
        MessageLocation("INBOX", 1), MessageLocation("Sent", 1)]
    assert store.find_by_message_id(ALICE, " Same@Example ") == store.find_by_message_id(ALICE, "<Same@Example>")
    assert store.find_by_message_id(ALICE, "same@example") == [MessageLocation("INBOX", 2)]
    assert store.find_by_message_id(ALICE, "<nothing@here>") == []


def test_message_id_index_does_not_read_messages(store, monkeypatch):
    """A lookup is an index hit: it neither fetches bodies nor lists mailboxes (it would be O(n) then)."""
    for n in range(50):
        store.deliver(ALICE, message(n))

    def boom(*args, **kwargs):
        raise AssertionError("find_by_message_id scanned the mailbox")

    for name in ("fetch_raw", "messages", "list_mailboxes", "_read_raw", "uid_range", "get"):
        monkeypatch.setattr(store, name, boom)
    assert store.find_by_message_id(ALICE, "<42@corp.example>") == [MessageLocation("INBOX", 43)]


def test_message_id_index_is_per_user(store):
    store.ensure_user(BOB)
    store.deliver(BOB, message(1))
    assert store.find_by_message_id(ALICE, "<1@corp.example>") == []
    assert store.find_by_message_id(BOB, "<1@corp.example>") == [MessageLocation("INBOX", 1)]
    assert store.users() == [ALICE, BOB]


def test_folded_message_id_header(store):
    raw = b"Subject: x\r\nmessage-id:\r\n <folded@corp.example>\r\n\r\nMessage-ID: <body@x>\r\n"
    rec = store.deliver(ALICE, raw)
    assert rec.message_id == "<folded@corp.example>"
    assert store.find_by_message_id(ALICE, "<body@x>") == []


def test_claim_recent_is_given_once(store):
    for n in range(3):
        store.deliver(ALICE, message(n))
    assert store.claim_recent(ALICE, "INBOX", [1, 2, 3, 9]) == {1, 2, 3}
    assert store.claim_recent(ALICE, "INBOX", [1, 2, 3]) == set()
    store.deliver(ALICE, message(4))
    assert store.claim_recent(ALICE, "INBOX", [1, 2, 3, 4]) == {4}
    store.copy(ALICE, "INBOX", [1], "Sent")
    assert store.claim_recent(ALICE, "Sent", [1]) == {1}


def test_listener_errors_do_not_break_the_store(store, events):
    def bad(event):
        raise RuntimeError("listener bug")

    store.subscribe(bad)
    rec = store.deliver(ALICE, message(1))
    assert events[-1] == MessageAppended(ALICE, "INBOX", rec, None)
    store.unsubscribe(bad)
    store.unsubscribe(bad)


def test_listener_may_read_the_store_during_an_event(store):
    seen = []

    def listener(event):
        if isinstance(event, MessageAppended):
            seen.append(store.mailbox(event.user, event.mailbox).exists)

    store.subscribe(listener)
    store.deliver(ALICE, message(1))
    store.deliver(ALICE, message(2))
    assert seen == [1, 2]


# --- removal listeners: told before the bytes are gone ----------------------------------------------------


def _removals(store):
    """Subscribe a removal listener that reads every removed message's bytes while it is told."""
    seen = []

    def listener(removing):
        # the message is still in the store while the listener runs, and its bytes are readable
        present = [r.uid for r in store.messages(removing.user, removing.mailbox)]
        seen.append((removing.user, removing.mailbox, [r.uid for r in removing.records], removing.cause,
                     removing.origin, [removing.read(r.uid) for r in removing.records],
                     all(r.uid in present for r in removing.records)))

    store.subscribe_removals(listener)
    return seen, listener


def test_removal_listeners_hear_expunges_before_the_bytes_go(store, events):
    seen, listener = _removals(store)
    a = store.deliver(ALICE, message(1))
    b = store.deliver(ALICE, message(2))
    store.store_flags(ALICE, "INBOX", [a.uid], ["\\Deleted"], "add")
    store.expunge(ALICE, "INBOX", None, origin=ORIGIN)  # IMAP EXPUNGE: the \Deleted ones
    assert seen == [(ALICE, "INBOX", [a.uid], "expunge", ORIGIN, [message(1)], True)]
    store.expunge(ALICE, "INBOX", [b.uid, 99], origin="recall")  # by UID; an unknown UID is not announced
    assert seen[-1] == (ALICE, "INBOX", [b.uid], "expunge", "recall", [message(2)], True)
    store.expunge(ALICE, "INBOX", [b.uid])  # nothing left: no call
    assert len(seen) == 2
    assert isinstance(events[-1], MessagesExpunged)  # the ordinary event still follows
    store.unsubscribe_removals(listener)
    store.unsubscribe_removals(listener)  # unknown: ignored
    c = store.deliver(ALICE, message(3))
    store.expunge(ALICE, "INBOX", [c.uid])
    assert len(seen) == 2


def test_a_move_is_not_a_removal_but_deleting_a_full_mailbox_is(store):
    seen, _listener = _removals(store)
    a = store.deliver(ALICE, message(1))
    store.create_mailbox(ALICE, "Projects")
    store.move(ALICE, "INBOX", [a.uid], "Projects")
    store.rename_mailbox(ALICE, "INBOX", "Old")  # moves INBOX's messages: not a removal either
    assert seen == []
    store.delete_mailbox(ALICE, "Old")  # empty: nothing to announce
    assert seen == []
    store.delete_mailbox(ALICE, "Projects", origin=ORIGIN)
    assert seen == [(ALICE, "Projects", [1], "mailbox-deleted", ORIGIN, [message(1)], True)]


def test_a_failing_removal_listener_does_not_stop_the_removal(store):
    def bad(removing):
        raise RuntimeError("listener bug")

    store.subscribe_removals(bad)
    seen, _listener = _removals(store)
    a = store.deliver(ALICE, message(1))
    assert store.expunge(ALICE, "INBOX", [a.uid]) == [a.uid]
    assert store.messages(ALICE, "INBOX") == [] and len(seen) == 1
    told = []
    store.subscribe_removals(told.append)
    b = store.deliver(ALICE, message(2))
    store.expunge(ALICE, "INBOX", [b.uid])
    with pytest.raises(NoSuchMessage):
        told[0].read(b.uid + 100)  # only the messages being removed can be read
