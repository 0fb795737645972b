"""What only the Maildir store has: files on disk, restarts, and changes made behind its back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from recall_lab.fake_servers.store import MaildirStore, open_store
from recall_lab.fake_servers.store import _maildir_files as mf
from recall_lab.fake_servers.store.base import MessageLocation, StoreError, StoreLocked
from tests.store.conftest import ALICE, message


@pytest.fixture
def root(tmp_path):
    return tmp_path / "mail"


def _snapshot(store):
    return {
        "mailboxes": [(m.name, m.uidvalidity, m.uidnext, m.highestmodseq, m.exists, m.unseen, m.special_use,
                       m.subscribed) for m in store.list_mailboxes(ALICE)],
        "messages": {m.name: store.messages(ALICE, m.name) for m in store.list_mailboxes(ALICE)},
        "subscriptions": store.subscriptions(ALICE),
    }


def _busy(store) -> None:
    store.ensure_user(ALICE)
    store.create_mailbox(ALICE, "Projects/2026", special_use="\\Archive")
    for n in range(6):
        store.deliver(ALICE, message(n))
    store.store_flags(ALICE, "INBOX", [1, 2], ["\\Seen", "kw"], "add")
    store.store_flags(ALICE, "INBOX", [2], ["kw"], "remove")
    store.move(ALICE, "INBOX", [3], "Projects/2026")
    store.expunge(ALICE, "INBOX", [4])
    store.set_subscribed(ALICE, "Projects", False)
    store.delete_mailbox(ALICE, "Drafts")


def test_open_store_specs(root):
    assert type(open_store("memory")).__name__ == "MemoryStore"
    store = open_store(f"maildir:{root}")
    assert isinstance(store, MaildirStore) and store.root == root
    for bad in ("maildir:", "mbox:/x", "memory:x", ""):
        with pytest.raises(StoreError):
            open_store(bad)


def test_layout_is_maildir_plus_plus(root):
    store = MaildirStore(root)
    _busy(store)
    home = root / ALICE
    assert {"cur", "new", "tmp"} <= set(os.listdir(home))
    for folder in (".Sent", ".Trash", ".Projects", ".Projects.2026"):
        assert {"cur", "new", "tmp", "maildirfolder", "dovecot-uidlist"} <= set(os.listdir(home / folder))
    assert not (home / ".Drafts").exists()
    header = (home / "dovecot-uidlist").read_text().splitlines()[0].split()
    assert header[0] == "3" and header[1] == f"V{store.mailbox(ALICE, 'INBOX').uidvalidity}"
    assert (home / "subscriptions").read_text().startswith("V\t2\n\n")
    assert "Projects\t2026\n" in (home / "subscriptions").read_text()
    names = os.listdir(home / "cur")
    assert any(n.endswith(":2,Sa") for n in names)  # \Seen + keyword "kw" = letter a
    assert (home / "dovecot-keywords").read_text() == "0 kw\n"
    new = os.listdir(home / "new")
    assert new and all(":" not in n for n in new)  # unflagged, unclaimed mail waits in new/
    assert not os.listdir(home / "tmp")
    # our side files: never a dot-name (Dovecot would take it for a folder), never a dovecot-* name
    ours = {n for n in os.listdir(home) + os.listdir(home / ".Sent") if "recall-lab" in n}
    assert ours == {mf.ACCOUNT, mf.STATE, mf.JOURNAL}


def test_file_mtime_is_internaldate_and_size_in_name(root):
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    when = datetime(2024, 2, 29, 12, 0, 1, tzinfo=UTC)
    rec = store.append(ALICE, "INBOX", message(1), ["\\Seen"], when)
    (name,) = os.listdir(root / ALICE / "cur")
    assert os.stat(root / ALICE / "cur" / name).st_mtime == when.timestamp()
    assert f",S={rec.size}," in name and f"W={rec.size}" in name


def test_restart_keeps_everything(root):
    store = MaildirStore(root)
    _busy(store)
    before = _snapshot(store)
    index = store.find_by_message_id(ALICE, "<2@corp.example>")
    store.close()
    again = MaildirStore(root)
    assert again.users() == [ALICE]
    assert _snapshot(again) == before
    assert again.find_by_message_id(ALICE, "<2@corp.example>") == index == [MessageLocation("Projects/2026", 1)]
    assert again.mailbox(ALICE, "Projects/2026").special_use == "\\Archive"
    # UIDs continue, MODSEQ keeps growing, UIDVALIDITY of a recreated mailbox is new.
    assert again.deliver(ALICE, message(7)).uid == 7
    assert again.mailbox(ALICE, "INBOX").highestmodseq > before["mailboxes"][0][3]
    again.create_mailbox(ALICE, "Drafts")
    old_drafts_validities = {m[1] for m in before["mailboxes"]}
    assert again.mailbox(ALICE, "Drafts").uidvalidity not in old_drafts_validities
    again.close()


def test_restart_without_close_replays_the_journal(root):
    store = MaildirStore(root)
    _busy(store)
    before = _snapshot(store)
    # no close(): as after a crash, the snapshot is stale and the journal holds the rest
    assert (root / ALICE / mf.JOURNAL).exists()
    again = MaildirStore(root)
    assert _snapshot(again) == before


def test_torn_journal_line_is_ignored(root):
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    store.deliver(ALICE, message(1))
    with open(root / ALICE / mf.JOURNAL, "a") as fh:
        fh.write('["F", 1, 99, "cur/x')
    again = MaildirStore(root)
    assert [r.uid for r in again.messages(ALICE, "INBOX")] == [1]


def test_reopen_reads_no_message_file(root, monkeypatch):
    """The Message-ID index is rebuilt from our side state, not by parsing every message again."""
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    for n in range(30):
        store.deliver(ALICE, message(n))
    store.close()

    def no_parse(path, *args):
        raise AssertionError(f"parsed {path}")

    monkeypatch.setattr(mf, "read_header_block", no_parse)
    again = MaildirStore(root)
    assert again.find_by_message_id(ALICE, "<29@corp.example>") == [MessageLocation("INBOX", 30)]


def test_external_changes_are_picked_up(root):
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    for n in range(3):
        store.append(ALICE, "INBOX", message(n), ["\\Seen"])
    info = store.mailbox(ALICE, "INBOX")
    store.close()
    cur = root / ALICE / "cur"
    by_body = {(cur / n).read_bytes(): n for n in os.listdir(cur)}
    names = [by_body[message(0)], by_body[message(1)]]
    # someone flags message 1, deletes message 2, and delivers a new one into new/
    os.rename(cur / names[0], cur / (mf.base_of(names[0]) + ":2,FS"))
    os.unlink(cur / names[1])
    (root / ALICE / "new" / "1700000000.M1P1.elsewhere,S=40").write_bytes(message("ext"))

    again = MaildirStore(root)
    recs = {r.uid: r for r in again.messages(ALICE, "INBOX")}
    assert set(recs) == {1, 3, 4}
    assert recs[1].flags == {"\\Seen", "\\Flagged"} and recs[1].modseq > info.highestmodseq
    assert recs[3].modseq <= info.highestmodseq
    assert recs[4].message_id == "<ext@corp.example>" and recs[4].flags == frozenset()
    assert again.find_by_message_id(ALICE, "<1@corp.example>") == []
    assert again.claim_recent(ALICE, "INBOX", [1, 3, 4]) == {4}
    assert again.mailbox(ALICE, "INBOX").uidnext == 5
    again.close()
    assert "4 :1700000000.M1P1.elsewhere,S=40" in (root / ALICE / "dovecot-uidlist").read_text()


def test_claims_survive_restart(root):
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    store.deliver(ALICE, message(1))
    store.deliver(ALICE, message(2))
    assert store.claim_recent(ALICE, "INBOX", [1]) == {1}
    store.close()
    again = MaildirStore(root)
    assert again.claim_recent(ALICE, "INBOX", [1, 2]) == {2}


def test_more_than_26_keywords_are_kept_in_side_state(root):
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    keywords = [f"k{n:02d}" for n in range(30)]
    store.append(ALICE, "INBOX", message(1), keywords)
    assert store.get(ALICE, "INBOX", 1).flags == set(keywords)
    store.close()
    assert len((root / ALICE / "dovecot-keywords").read_text().splitlines()) == 26
    again = MaildirStore(root)
    assert again.get(ALICE, "INBOX", 1).flags == set(keywords)
    again.store_flags(ALICE, "INBOX", [1], ["k29"], "remove")
    again.close()
    assert MaildirStore(root).get(ALICE, "INBOX", 1).flags == set(keywords) - {"k29"}


def test_dot_in_name_is_refused_and_changes_nothing(root):
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    with pytest.raises(StoreError, match=r"\."):
        store.create_mailbox(ALICE, "v1.2/notes")
    with pytest.raises(StoreError, match=r"\."):
        store.create_mailbox(ALICE, "fine/not.fine")
    store.create_mailbox(ALICE, "kid/x")
    with pytest.raises(StoreError, match=r"\."):
        store.rename_mailbox(ALICE, "kid", "new/a.b")
    with pytest.raises(StoreError, match=r"\."):
        store.rename_mailbox(ALICE, "INBOX", "old.inbox")
    assert {m.name for m in store.list_mailboxes(ALICE)} == {"INBOX", "Sent", "Drafts", "Trash", "kid", "kid/x"}


def test_non_ascii_names_use_modified_utf7_directories(root):
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    store.create_mailbox(ALICE, "Entwürfe/Ä")
    assert (root / ALICE / ".Entw&APw-rfe.&AMQ-").is_dir()
    store.close()
    assert "Entwürfe/Ä" in {m.name for m in MaildirStore(root).list_mailboxes(ALICE)}


def test_journal_is_compacted(root, monkeypatch):
    from recall_lab.fake_servers.store import maildir

    monkeypatch.setattr(maildir, "COMPACT_SLACK", 5)
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    journal = root / ALICE / mf.JOURNAL
    for n in range(20):
        store.deliver(ALICE, message(n))
    store.expunge(ALICE, "INBOX", list(range(1, 19)))
    for n in range(20, 30):
        store.deliver(ALICE, message(n))
        lines = len(journal.read_text().splitlines())
        assert lines <= 5 + store.mailbox(ALICE, "INBOX").exists + 1
    state = json.loads((root / ALICE / mf.STATE).read_text())
    assert state["highestmodseq"] >= 21  # the snapshot took over what the journal held
    uidlist = (root / ALICE / "dovecot-uidlist").read_text().splitlines()
    assert len(uidlist) == 1 + 12  # expunged lines were dropped when they outnumbered the live ones
    before = _snapshot(store)
    assert [r.uid for r in MaildirStore(root).messages(ALICE, "INBOX")] == [19, 20] + list(range(21, 31))
    assert _snapshot(MaildirStore(root)) == before


def test_dovecot_side_files_are_tolerated(root):
    """A uidlist Dovecot rewrote (extension fields, full names) and its index files do not confuse us."""
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    store.append(ALICE, "INBOX", message(1), ["\\Seen"])
    uidvalidity = store.mailbox(ALICE, "INBOX").uidvalidity
    store.close()
    home = root / ALICE
    (name,) = os.listdir(home / "cur")
    (home / "dovecot-uidlist").write_text(f"3 V{uidvalidity} N5 Gabc\n1 W52 S51 :{name}\n")
    (home / "dovecot.index.log").write_bytes(b"\0\1binary")
    (home / ".DOVECOT-TRASHED").mkdir()
    again = MaildirStore(root)
    assert [r.uid for r in again.messages(ALICE, "INBOX")] == [1]
    assert again.mailbox(ALICE, "INBOX").uidnext == 5
    assert again.deliver(ALICE, message(2)).uid == 5
    assert ".DOVECOT-TRASHED" not in {m.name for m in again.list_mailboxes(ALICE)}


def test_unwritable_root_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError):
        MaildirStore(blocker / "mail")


def test_files_renamed_behind_our_back_are_found_again(root):
    """A Dovecot serving the same Maildir moves new/ mail to cur/ and renames files for flags."""
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    for n in range(3):
        store.deliver(ALICE, message(n))
    home = root / ALICE
    for name in os.listdir(home / "new"):
        os.rename(home / "new" / name, home / "cur" / f"{name}:2,S")
    assert store.fetch_raw(ALICE, "INBOX", 1) == message(0)
    store.store_flags(ALICE, "INBOX", [2], ["\\Flagged"], "add")
    assert store.claim_recent(ALICE, "INBOX", [3]) == {3}
    assert store.expunge(ALICE, "INBOX", [3]) == [3]
    assert len(os.listdir(home / "cur")) == 2
    assert any(name.endswith(":2,F") for name in os.listdir(home / "cur"))
    store.close()
    again = MaildirStore(root)
    assert [r.uid for r in again.messages(ALICE, "INBOX")] == [1, 2]


def test_external_expunge_moves_highestmodseq(root):
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    store.append(ALICE, "INBOX", message(1), ["\\Seen"])
    store.append(ALICE, "INBOX", message(2), ["\\Seen"])
    before = store.mailbox(ALICE, "INBOX").highestmodseq
    store.close()
    cur = root / ALICE / "cur"
    (victim,) = [n for n in os.listdir(cur) if (cur / n).read_bytes() == message(2)]
    os.unlink(root / ALICE / "cur" / victim)
    again = MaildirStore(root)
    assert [r.uid for r in again.messages(ALICE, "INBOX")] == [1]
    assert again.mailbox(ALICE, "INBOX").highestmodseq == before + 1
    again.close()
    assert MaildirStore(root).mailbox(ALICE, "INBOX").highestmodseq == before + 1


def test_recreated_mailbox_continues_uids_after_restart(root):
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    store.create_mailbox(ALICE, "box")
    for n in range(3):
        store.append(ALICE, "box", message(n))
    old = store.mailbox(ALICE, "box").uidvalidity
    store.delete_mailbox(ALICE, "box")
    store.close()
    again = MaildirStore(root)
    info = again.create_mailbox(ALICE, "box")
    assert info.uidvalidity > old and info.uidnext == 4
    assert again.append(ALICE, "box", message(9)).uid == 4


_OPEN_IN_CHILD = """
import sys
from recall_lab.fake_servers.store import MaildirStore
from recall_lab.fake_servers.store.base import StoreLocked
try:
    store = MaildirStore(sys.argv[1])
except StoreLocked as exc:
    print("locked:", exc)
    sys.exit(3)
print("opened", flush=True)
if sys.argv[2:] == ["hold"]:
    sys.stdin.readline()  # keep it open until the parent says so (or kills us)
store.close()
"""


def _child(root, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _OPEN_IN_CHILD, str(root), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_process_cannot_open_a_maildir_in_use_until_it_is_closed(root):
    """F13: two labs on one maildir would hand out the same UIDs; the second one must refuse to start."""
    store = MaildirStore(root)
    store.ensure_user(ALICE)
    out, err = _child(root).communicate(timeout=30)
    assert out.strip() == f"locked: maildir {root} is in use by another lab (pid {os.getpid()})", (out, err)
    # this process may reopen it (a restart after a crash, in tests), sharing the lock
    again = MaildirStore(root)
    again.close()
    out, _err = _child(root).communicate(timeout=30)
    assert out.startswith("locked:")  # still held by `store`
    store.close()
    child = _child(root)
    out, err = child.communicate(timeout=30)
    assert (child.returncode, out.strip()) == (0, "opened"), err


def test_a_lab_that_died_leaves_no_stale_lock(root):
    child = _child(root, "hold")
    assert child.stdout.readline().strip() == "opened"
    try:
        with pytest.raises(StoreLocked, match=rf"in use by another lab \(pid {child.pid}\)"):
            MaildirStore(root)
    finally:
        child.kill()  # a crash: no close(), the kernel drops the lock
        child.communicate(timeout=30)
    store = MaildirStore(root)
    assert store.users() == []  # the lock file is not taken for a user
    store.close()
    assert (root / "recall-lab.lock").read_text() == ""
