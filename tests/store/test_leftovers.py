"""Temporaries a crash leaves in a Maildir (tmp/ files, half-replaced metadata, half-removed mailboxes) are
removed when the store opens the account again; what might still be written by someone else is kept.

The crash is reproduced by what it leaves: the files a killed writer leaves behind, named as our writers name
them (with the writer's pid), planted before the store opens the directory again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from recall_lab.fake_servers.store import MaildirStore
from recall_lab.fake_servers.store import _maildir_files as mf
from tests.store.conftest import ALICE, message

HOURS = 3600.0


@pytest.fixture
def root(tmp_path):
    """A Maildir with one account and a message in INBOX and in a folder, closed (as after a crash)."""
    path = tmp_path / "mail"
    store = MaildirStore(path)
    store.ensure_user(ALICE)
    store.create_mailbox(ALICE, "Projects")
    store.deliver(ALICE, message(1))
    store.append(ALICE, "Projects", message(2))
    store.close()
    return path


def dead_pid() -> int:
    """The pid of a process that has exited (a killed lab's)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def ours_in_tmp(folder, pid: int) -> os.PathLike:
    """A message file of ours, as _persist_append writes it before the rename into new/."""
    path = folder / "tmp" / f"{int(time.time())}.M12345P{pid}Q7.host,S=10,W=12"
    path.write_bytes(b"Subject: half\r\n")
    return path


def leftovers(root, pid: int) -> dict[str, os.PathLike]:
    home = root / ALICE
    planted = {
        "inbox tmp": ours_in_tmp(home, pid),
        "folder tmp": ours_in_tmp(home / ".Projects", pid),
        "uidlist": home / f"{mf.UIDLIST}.tmp-{pid}-3",
        "state": home / ".Projects" / f"{mf.STATE}.tmp-{pid}-4",
        "account": home / f"{mf.ACCOUNT}.tmp-{pid}-5",
    }
    for name, path in planted.items():
        if not path.exists():
            path.write_bytes(name.encode())
    doomed = home / f"{mf.TRASH_PREFIX}1700000000-{pid}-99"
    (doomed / "cur").mkdir(parents=True)
    (doomed / "cur" / "1.M1P1Q1.host:2,").write_bytes(b"x")
    planted["half-removed mailbox"] = doomed
    return planted


def test_a_dead_writers_temporaries_are_removed_and_the_mail_is_intact(root) -> None:
    planted = leftovers(root, dead_pid())
    store = MaildirStore(root)
    try:
        assert [r.uid for r in store.messages(ALICE, "INBOX")] == [1]
        assert [r.uid for r in store.messages(ALICE, "Projects")] == [1]
        assert store.fetch_raw(ALICE, "INBOX", 1) == message(1)
        left = {name for name, path in planted.items() if os.path.exists(path)}
        assert left == set()
        store.deliver(ALICE, message(3))  # and the store goes on writing as before
        assert [r.uid for r in store.messages(ALICE, "INBOX")] == [1, 2]
    finally:
        store.close()
    assert os.listdir(root / ALICE / "tmp") == []


def test_our_own_pid_counts_as_dead_when_no_other_store_of_ours_has_the_directory(root) -> None:
    """A lab restarted in a fresh container often has the pid its killed predecessor had."""
    planted = leftovers(root, os.getpid())
    store = MaildirStore(root)
    try:
        store.list_mailboxes(ALICE)
        assert {name for name, path in planted.items() if os.path.exists(path)} == set()
    finally:
        store.close()


def test_a_store_beside_another_of_this_process_leaves_this_process_temporaries_alone(root) -> None:
    first = MaildirStore(root)
    try:
        planted = leftovers(root, os.getpid())
        second = MaildirStore(root)  # shares the lock: the first could be writing these right now
        try:
            second.list_mailboxes(ALICE)
            assert all(os.path.exists(path) for path in planted.values())
        finally:
            second.close()
    finally:
        first.close()


def test_someone_elses_tmp_file_goes_only_after_36_hours(root) -> None:
    """Maildir's rule for files we cannot attribute (a Dovecot delivering to the same directory)."""
    foreign = root / ALICE / "tmp" / "1700000000.M1P4242.otherhost"
    foreign.write_bytes(b"being delivered")
    store = MaildirStore(root, clock=lambda: time.time() + 35 * HOURS)
    try:
        store.list_mailboxes(ALICE)
        assert foreign.exists()
    finally:
        store.close()
    store = MaildirStore(root, clock=lambda: time.time() + 37 * HOURS)
    try:
        store.list_mailboxes(ALICE)
        assert not foreign.exists()
    finally:
        store.close()


def test_files_that_only_look_like_leftovers_are_kept(root) -> None:
    """A mailbox whose name ends like a temporary, and metadata names that are not ours, stay."""
    store = MaildirStore(root)
    try:
        store.create_mailbox(ALICE, "notes/uidlist-tmp-1-2")
        store.append(ALICE, "notes/uidlist-tmp-1-2", message(9))
    finally:
        store.close()
    other = root / ALICE / f"dovecot.index.tmp-{dead_pid()}-1"
    other.write_bytes(b"not ours")
    store = MaildirStore(root)
    try:
        assert len(store.messages(ALICE, "notes/uidlist-tmp-1-2")) == 1
        assert other.exists()
    finally:
        store.close()
