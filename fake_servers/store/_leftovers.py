"""Temporary files a crash left in a Maildir account, found and removed when the store opens it.

Why at open: every write of ours goes to a temporary name first (a message to `tmp/` then renamed into `new/`
or `cur/`; a metadata file to `<name>.tmp-<pid>-<n>` then renamed over it; a deleted mailbox is renamed to
`recall-lab-deleting-...` then removed). A process killed between the two steps leaves the temporary behind,
and nothing ever looked at them again: they only cost disk space, but forever.

What may be removed, and why that is safe:
- Files of ours (the names above, whose shape says who wrote them, with the writer's pid in them), when the
  writer cannot still be writing them. The store's lock (`_lock`) proves that no other process has this
  Maildir open, so every other pid's temporaries are leftovers; our own pid's are leftovers too when this
  store is the only one of the process on the directory (a temporary exists only inside one synchronous store
  call). A store opened beside another one of the same process (a test reopening a directory) leaves this
  process's own temporaries alone.
- Anyone's file in `tmp/` that nobody has touched for 36 hours: the Maildir convention (qmail's maildir(5),
  which Dovecot follows), for what another program (a Dovecot delivering to the same directory) left.
Nothing a client was ever told about lives in a temporary: a message is acknowledged after its rename.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from recall_lab.fake_servers.store import _maildir_files as mf

log = logging.getLogger(__name__)

#: The Maildir convention: a tmp/ file untouched for this long is abandoned, whoever wrote it.
STALE_TMP_AGE = 36 * 3600.0

#: A message file of ours in tmp/ (see `_maildir_files.new_base_name`): the writer's pid after "P".
_MESSAGE_TMP = re.compile(r"^\d+\.M\d+P(\d+)Q\d+\.[^/]*,S=\d+,W=\d+$")
#: A metadata file being replaced (see `_maildir_files.write_atomic`): the writer's pid after ".tmp-".
_REPLACED = (mf.UIDLIST, mf.KEYWORDS, mf.SUBSCRIPTIONS, mf.STATE, mf.ACCOUNT)
_ATOMIC_TMP = re.compile(rf"^(?:{'|'.join(map(re.escape, _REPLACED))})\.tmp-(\d+)-\d+$")
#: A mailbox directory being removed (see `MaildirStore._persist_delete`): the pid is the second number.
_DOOMED = re.compile(rf"^{re.escape(mf.TRASH_PREFIX)}\d+-(\d+)-\d+$")


class Sweeper:
    """Decides and removes; one per store, with the store's clock and whether it owns the directory alone."""

    def __init__(self, now: float, *, sole_owner: bool, stale_age: float = STALE_TMP_AGE) -> None:
        self.now = now
        self.sole_owner = sole_owner
        self.stale_age = stale_age
        self.removed = 0

    def _writer_gone(self, pid_text: str) -> bool:
        return self.sole_owner or int(pid_text) != os.getpid()

    def _stale(self, path: Path) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        return max(st.st_atime, st.st_mtime, st.st_ctime) < self.now - self.stale_age

    def _remove(self, path: Path, *, tree: bool = False) -> None:
        try:
            if tree:
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:  # not ours to fix (permissions): leave it, say so once
            log.warning("cannot remove leftover %s: %s", path, exc.strerror or exc)
            return
        self.removed += 1

    def folder(self, folder: Path) -> None:
        """One mailbox directory: its tmp/ and its half-replaced metadata files."""
        before = self.removed
        for entry in _scan(folder / "tmp"):
            if not entry.is_file(follow_symlinks=False):
                continue
            mine = _MESSAGE_TMP.match(entry.name)
            if (mine and self._writer_gone(mine.group(1))) or self._stale(Path(entry.path)):
                self._remove(Path(entry.path))
        self._atomic_temporaries(folder)
        self._report(folder, before)

    def home(self, home: Path) -> None:
        """A user's home: half-replaced account files and mailbox directories whose removal was cut short."""
        before = self.removed
        self._atomic_temporaries(home)
        for entry in _scan(home):
            doomed = _DOOMED.match(entry.name)
            if doomed and entry.is_dir(follow_symlinks=False) and self._writer_gone(doomed.group(1)):
                self._remove(Path(entry.path), tree=True)
        self._report(home, before)

    def _report(self, directory: Path, before: int) -> None:
        if self.removed > before:
            log.info("removed %d leftover temporaries of an interrupted write in %s", self.removed - before,
                     directory)

    def _atomic_temporaries(self, directory: Path) -> None:
        for entry in _scan(directory):
            mine = _ATOMIC_TMP.match(entry.name)
            if mine and entry.is_file(follow_symlinks=False) and self._writer_gone(mine.group(1)):
                self._remove(Path(entry.path))


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except OSError:
        return []
