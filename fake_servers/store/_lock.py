"""One process at a time on a Maildir root: an exclusive `flock` on `DIR/recall-lab.lock`, which holds the pid.

Why: each MaildirStore keeps the next UID of every mailbox in memory. Two labs (two `serve` processes) on the
same directory would both hand out UID 1 for different messages, and every client cache (a desktop client,
mbsync state) would then map a UID to the wrong message: the rule "UIDs are never reused" is broken for good.
Dovecot guards its dovecot-uidlist the same way.

Why per process and not per store: stores of one process share the lock (a count), so a test can reopen a
directory without closing it first, as after a crash; the kernel drops the lock when the process ends, so a
crashed lab never leaves a stale lock behind. Why flock and not a pid file alone: a pid file outlives a
crash and pids are reused.
"""

from __future__ import annotations

import fcntl
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from recall_lab.fake_servers.store.base import StoreError, StoreLocked

LOCK_FILE = "recall-lab.lock"


@dataclass
class _Held:
    file: BinaryIO
    pid: int  # the process that took it (a forked child inherits the table, not the right to the lock)
    stores: int


_HELD: dict[str, _Held] = {}
_GUARD = threading.Lock()


def _key(root: Path) -> str:
    return os.path.realpath(root)


def acquire(root: Path) -> str:
    """Take (or share, within this process) the lock of `root`; returns the key to `release` it with.

    Raises StoreLocked when another process holds it, StoreError when the lock file cannot be opened.
    """
    key = _key(root)
    with _GUARD:
        held = _HELD.get(key)
        if held is not None and held.pid == os.getpid():
            held.stores += 1
            return key
        try:
            fh = open(os.path.join(key, LOCK_FILE), "a+b")  # noqa: SIM115 - kept open while the lock is held
        except OSError as exc:
            raise StoreError(f"Mail storage error: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read(20).decode("ascii", "replace").strip() or "?"
            fh.close()
            if isinstance(exc, BlockingIOError):
                raise StoreLocked(f"maildir {root} is in use by another lab (pid {holder})") from None
            raise StoreError(f"Mail storage error: {exc.strerror or exc}") from exc
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n".encode("ascii"))
        fh.flush()
        _HELD[key] = _Held(fh, os.getpid(), 1)
        return key


def release(key: str) -> None:
    """One store of this process let go; the last one unlocks (the file stays: removing it would race)."""
    with _GUARD:
        held = _HELD.get(key)
        if held is None or held.pid != os.getpid():
            return
        held.stores -= 1
        if held.stores > 0:
            return
        del _HELD[key]
        try:
            held.file.truncate(0)
        except OSError:
            pass
        held.file.close()  # closing the last descriptor releases the flock


def holders(key: str) -> int:
    """How many stores of this process hold the lock of `key` (0 when this process does not hold it)."""
    with _GUARD:
        held = _HELD.get(key)
        return held.stores if held is not None and held.pid == os.getpid() else 0
