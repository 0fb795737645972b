"""The on-disk store: one Maildir++ tree per user, in the layout Dovecot serves (see `_maildir_files`).

Why Maildir and Dovecot's own metadata files: the lab can point a real Dovecot at the same directory
(`mail_location = maildir:DIR/%u`) and get the same messages, UIDs, UIDVALIDITY, flags and folders, which is
how we check our IMAP server against a reference. What Dovecot has no file for (MODSEQ, special-use, the
Message-ID cache, keywords beyond the 26 letters, the UIDNEXT of deleted mailboxes) lives in our own side
files, which Dovecot ignores.

Side state per mailbox is a snapshot (`recall-lab-state.json`) plus an append-only journal
(`recall-lab-state.log`, one JSON array per line, replay is idempotent) so a change costs one short append,
not a rewrite; the journal is folded into the snapshot when it grows and on `close()`. Loading trusts the
Maildir itself: a file that is gone was expunged, a file nobody numbered yet gets the next UID, a file whose
flags differ from what we last wrote was changed by someone else (Dovecot) and gets a new MODSEQ. Headers
are parsed only for files our side state does not know, so reopening 100k messages reads no message file.

Crash leftovers: temporaries of ours (tmp/ files, half-replaced metadata files, half-removed mailboxes) are
removed when an account is loaded, and anyone's tmp/ file untouched for 36 hours (see `_leftovers` for why
that is safe). Changes that span mailboxes keep a write-ahead record under `.recall-lab-operations/` (see
`_operations`) until their author ends them.

One process at a time: opening takes an exclusive lock on `DIR/recall-lab.lock` (see `_lock`), so a second
lab on the same directory gets StoreLocked instead of handing out the UIDs the first one hands out; `close()`
releases it. Not supported: a Dovecot writing the same mailbox while this store has it loaded (Dovecot does
not know our lock); stop one before the other writes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from recall_lab.fake_servers.store import _lock
from recall_lab.fake_servers.store import _maildir_files as mf
from recall_lab.fake_servers.store._core import Account, CoreStore, MailboxState
from recall_lab.fake_servers.store._leftovers import STALE_TMP_AGE, Sweeper
from recall_lab.fake_servers.store._msgid import extract_message_id
from recall_lab.fake_servers.store._names import INBOX, canonical, user_key
from recall_lab.fake_servers.store._operations import DIRECTORY as OPERATIONS_DIR
from recall_lab.fake_servers.store._operations import DiskOperations
from recall_lab.fake_servers.store.base import DEFAULT_MAILBOXES, MessageRecord, StoreError

#: Fold the journal into the snapshot once it has this many lines more than the mailbox has messages.
COMPACT_SLACK = 5000


@dataclass
class _Folder:
    """What the Maildir store keeps per mailbox beside the core's MailboxState."""

    path: Path
    guid: str
    keywords: list[str] = field(default_factory=list)
    files: dict[int, str] = field(default_factory=dict)  # uid -> "cur/<name>" or "new/<name>"
    extra: dict[int, list[str]] = field(default_factory=dict)  # uid -> keywords without a letter
    journal_lines: int = 0
    stale_uidlist: int = 0  # expunged lines still in dovecot-uidlist


def _io_error(exc: OSError) -> StoreError:
    return StoreError(f"Mail storage error: {exc.strerror or exc}")


class MaildirStore(CoreStore):
    """`MailStore` on disk under `root` (DIR/<user>/ is each user's Maildir++ home)."""

    def __init__(self, root: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
                 stale_tmp_age: float = STALE_TMP_AGE) -> None:
        """`clock` and `stale_tmp_age` decide which files in tmp/ count as abandoned (see `_leftovers`)."""
        super().__init__()
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _io_error(exc) from exc
        # before reading anything: another process's next UIDs would be ours too (raises StoreLocked)
        self._lock = _lock.acquire(self.root)
        self._closed = False
        # Holding the lock, we know who may still be writing here: that decides which temporaries are leftovers.
        self._sweeper = Sweeper(clock(), sole_owner=_lock.holders(self._lock) == 1, stale_age=stale_tmp_age)
        try:
            self._operations = DiskOperations(self.root / OPERATIONS_DIR)
        except BaseException:
            _lock.release(self._lock)
            raise

    # -- paths ---------------------------------------------------------------------------------------------
    def _home(self, user: str) -> Path:
        if not user or "/" in user or user in (".", "..") or user.startswith("."):
            raise StoreError(f"Invalid user name for the Maildir store: {user!r}")
        return self.root / user

    def _check_name(self, name: str) -> None:
        mf.folder_dir_name(name)

    def _folder_path(self, account: Account, name: str) -> Path:
        home = self._home(account.name)
        return home if name == INBOX else home / mf.folder_dir_name(name)

    # -- accounts ------------------------------------------------------------------------------------------
    def _stored_users(self) -> list[str]:
        try:
            return [p.name for p in self.root.iterdir() if (p / "cur").is_dir() and p.name == user_key(p.name)]
        except OSError:
            return []

    def _persist_account(self, account: Account) -> None:
        home = self._home(account.name)
        try:
            for sub in ("cur", "new", "tmp"):
                (home / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _io_error(exc) from exc
        account.backend = home
        self._persist_retired(account)

    def _persist_retired(self, account: Account) -> None:
        data = {"version": 1, "last_uidvalidity": self._last_uidvalidity, "retired": account.retired}
        mf.write_atomic(self._home(account.name) / mf.ACCOUNT, json.dumps(data).encode())

    def _persist_subscriptions(self, account: Account) -> None:
        mf.write_subscriptions(self._home(account.name), list(account.subscriptions))

    def _load_account(self, user: str) -> Account | None:
        home = self._home(user)
        if not (home / "cur").is_dir():
            return None
        account = Account(user)
        account.backend = home
        self._sweeper.home(home)
        try:
            meta = json.loads((home / mf.ACCOUNT).read_text())
            account.retired = {str(k): int(v) for k, v in meta.get("retired", {}).items()}
            self._last_uidvalidity = max(self._last_uidvalidity, int(meta.get("last_uidvalidity", 0)))
        except (OSError, ValueError, AttributeError):
            pass
        folders: list[tuple[str, Path]] = [(INBOX, home)]
        for entry in sorted(os.scandir(home), key=lambda e: e.name):
            name = mf.folder_name(entry.name)
            if name is not None and entry.is_dir() and os.path.isdir(os.path.join(entry.path, "cur")):
                folders.append((name, Path(entry.path)))
        for name, path in folders:
            mbox = self._load_mailbox(account, name, path)
            account.mailboxes[name] = mbox
            self._last_uidvalidity = max(self._last_uidvalidity, mbox.uidvalidity)
            for record in mbox.records.values():
                account.index.add(record.message_id, name, record.uid)
        for name in mf.read_subscriptions(home):
            try:
                account.subscriptions[canonical(name)] = None
            except StoreError:
                continue
        return account

    # -- loading one mailbox -----------------------------------------------------------------------------
    def _read_side(self, path: Path) -> tuple[dict, int]:
        """Snapshot with the journal replayed: {"uidvalidity", "highestmodseq", "special_use", "msgs"}."""
        state: dict = {"uidvalidity": 0, "highestmodseq": 0, "special_use": None, "msgs": {}}
        try:
            snap = json.loads((path / mf.STATE).read_text())
            state["uidvalidity"] = int(snap.get("uidvalidity", 0))
            state["highestmodseq"] = int(snap.get("highestmodseq", 0))
            state["special_use"] = snap.get("special_use")
            state["msgs"] = {int(m[0]): m for m in snap.get("messages", [])}
        except (OSError, ValueError, TypeError, AttributeError, IndexError):
            pass
        lines = 0
        try:
            with open(path / mf.JOURNAL, encoding="utf-8") as fh:
                for line in fh:
                    lines += 1
                    try:
                        self._replay(state, json.loads(line))
                    except (ValueError, TypeError, IndexError, KeyError):
                        continue  # a torn last line after a crash
        except OSError:
            pass
        return state, lines

    @staticmethod
    def _replay(state: dict, entry: list) -> None:
        kind = entry[0]
        if kind == "A":  # ["A", uid, modseq, relfile, size, mtime, message_id, extra]
            state["msgs"][int(entry[1])] = entry[1:]
            state["highestmodseq"] = max(state["highestmodseq"], int(entry[2]))
        elif kind == "F":  # ["F", uid, modseq, relfile, extra]
            msg = state["msgs"].get(int(entry[1]))
            if msg is not None:
                msg[1], msg[2], msg[6] = int(entry[2]), entry[3], entry[4]
            state["highestmodseq"] = max(state["highestmodseq"], int(entry[2]))
        elif kind == "M":  # ["M", uid, relfile]: moved new/ -> cur/ without a flag change
            msg = state["msgs"].get(int(entry[1]))
            if msg is not None:
                msg[2] = entry[2]
        elif kind == "X":  # ["X", modseq, [uids]]
            for uid in entry[2]:
                state["msgs"].pop(int(uid), None)
            state["highestmodseq"] = max(state["highestmodseq"], int(entry[1]))
        elif kind == "H":  # ["H", uidvalidity, special_use]
            state["uidvalidity"], state["special_use"] = int(entry[1]), entry[2]

    def _load_mailbox(self, account: Account, name: str, path: Path) -> MailboxState:
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(exist_ok=True)
        self._sweeper.folder(path)
        side, journal_lines = self._read_side(path)
        uidlist = mf.read_uidlist(path)
        dirty = False
        if uidlist is None:
            uidvalidity, next_uid, guid, entries = self._new_uidvalidity(), 1, mf.new_guid(), {}
            dirty = True
        else:
            uidvalidity, next_uid, guid, entries = uidlist
            if not guid:
                guid, dirty = mf.new_guid(), True
        special_use = DEFAULT_MAILBOXES.get(name)
        known: dict[int, list] = {}
        highestmodseq = 0
        if side["uidvalidity"] == uidvalidity:
            known = side["msgs"]
            highestmodseq = side["highestmodseq"]
            special_use = side["special_use"]
        folder = _Folder(path, guid, mf.read_keywords(path))
        mbox = MailboxState(name, uidvalidity, next_uid, highestmodseq, special_use)
        mbox.backend = folder

        on_disk: dict[str, str] = {}  # base -> "cur/<name>"
        for sub in ("new", "cur"):
            for entry in os.scandir(path / sub):
                if not entry.name.startswith("."):
                    on_disk[mf.base_of(entry.name)] = f"{sub}/{entry.name}"
        numbered = set()
        changed = vanished = False
        for uid in sorted(entries):
            base = entries[uid]
            relfile = on_disk.get(base)
            if relfile is None or base in numbered:
                vanished |= uid in known  # expunged by someone else
                dirty = True
                continue
            numbered.add(base)
            record, bumped = self._record_from_disk(mbox, uid, relfile, known.get(uid))
            changed |= bumped
            folder.files[uid] = relfile
            mbox.add(record)
            if relfile.startswith("cur/"):
                mbox.claimed.add(uid)
        if vanished:  # an expunge is a change too: CONDSTORE clients must see HIGHESTMODSEQ move
            mbox.next_modseq()
            changed = True
        fresh = sorted(b for b in on_disk if b not in numbered)
        for base in fresh:  # delivered by someone else: number them now, as Dovecot would
            uid = mbox.uidnext
            relfile = on_disk[base]
            record, _ = self._record_from_disk(mbox, uid, relfile, None)
            folder.files[uid] = relfile
            mbox.add(record)
            mbox.uidnext = uid + 1
            if relfile.startswith("cur/"):
                mbox.claimed.add(uid)
            dirty = changed = True
        if changed or not (path / mf.STATE).exists():
            dirty = True
        folder.journal_lines = journal_lines
        if dirty:
            self._write_uidlist(mbox)
            self._write_snapshot(mbox)
        return mbox

    def _record_from_disk(self, mbox: MailboxState, uid: int, relfile: str, cached: list | None
                          ) -> tuple[MessageRecord, bool]:
        """A record for a file; (record, True) when its MODSEQ had to be raised (new or changed outside)."""
        folder: _Folder = mbox.backend
        on_disk = frozenset(mf.flags_from_name(relfile, folder.keywords))
        if cached is not None and mf.base_of(cached[2].split("/", 1)[-1]) == mf.base_of(relfile.split("/", 1)[-1]):
            _, modseq, old_relfile, size, mtime, message_id, extra = cached[:7]
            extra = list(extra or [])
            flags = on_disk | frozenset(extra) if extra else on_disk
            if extra:
                folder.extra[uid] = extra
            bumped = False
            if old_relfile != relfile:  # renamed since we last wrote it: did the flags change?
                was = frozenset(mf.flags_from_name(old_relfile, folder.keywords)) | frozenset(extra)
                bumped = was != flags
            if bumped:
                modseq = mbox.highestmodseq + 1
            record = MessageRecord(uid, flags, datetime.fromtimestamp(int(mtime), tz=UTC), int(size),
                                   max(int(modseq), 1), message_id)
            mbox.highestmodseq = max(mbox.highestmodseq, record.modseq)
            return record, bumped
        path = folder.path / relfile
        st = path.stat()
        size = mf.size_from_name(relfile)
        if size is None or size != st.st_size:
            size = st.st_size
        message_id = extract_message_id(mf.read_header_block(path))
        modseq = mbox.highestmodseq + 1
        mbox.highestmodseq = modseq
        record = MessageRecord(uid, on_disk, datetime.fromtimestamp(int(st.st_mtime), tz=UTC), size, modseq,
                               message_id)
        return record, True

    # -- side files ------------------------------------------------------------------------------------------
    def _write_uidlist(self, mbox: MailboxState) -> None:
        folder: _Folder = mbox.backend
        entries = {uid: name.split("/", 1)[1] for uid, name in folder.files.items()}
        mf.write_uidlist(folder.path, mbox.uidvalidity, mbox.uidnext, folder.guid, entries)
        folder.stale_uidlist = 0

    def _write_snapshot(self, mbox: MailboxState) -> None:
        folder: _Folder = mbox.backend
        messages = [
            [uid, r.modseq, folder.files[uid], r.size, int(r.internaldate.timestamp()), r.message_id,
             folder.extra.get(uid, [])]
            for uid, r in mbox.records.items()
        ]
        data = {"version": 1, "uidvalidity": mbox.uidvalidity, "highestmodseq": mbox.highestmodseq,
                "special_use": mbox.special_use, "messages": messages}
        mf.write_atomic(folder.path / mf.STATE, json.dumps(data, separators=(",", ":")).encode())
        try:
            os.unlink(folder.path / mf.JOURNAL)
        except FileNotFoundError:
            pass
        folder.journal_lines = 0

    def _journal(self, mbox: MailboxState, entry: list) -> None:
        """Append one change. Hooks run before the core applies the change, so memory holds exactly what
        is on disk so far: that is the moment a snapshot may replace the journal."""
        folder: _Folder = mbox.backend
        if folder.journal_lines > COMPACT_SLACK + len(mbox.records):
            self._write_snapshot(mbox)
        with open(folder.path / mf.JOURNAL, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
        folder.journal_lines += 1

    def _maybe_compact(self, mbox: MailboxState, live: int) -> None:
        """Drop expunged lines from dovecot-uidlist once they outnumber the live ones (plus slack)."""
        folder: _Folder = mbox.backend
        if folder.stale_uidlist > COMPACT_SLACK + live:
            self._write_uidlist(mbox)

    # -- mailboxes ----------------------------------------------------------------------------------------------
    def _persist_create(self, account: Account, mbox: MailboxState) -> None:
        path = self._folder_path(account, mbox.name)
        try:
            for sub in ("cur", "new", "tmp"):
                (path / sub).mkdir(parents=True, exist_ok=True)
            if mbox.name != INBOX:
                (path / mf.FOLDER_MARKER).touch()
            mbox.backend = _Folder(path, mf.new_guid(), mf.read_keywords(path))
            self._write_uidlist(mbox)
            self._write_snapshot(mbox)
        except OSError as exc:
            raise _io_error(exc) from exc

    def _persist_delete(self, account: Account, mbox: MailboxState) -> None:
        folder: _Folder = mbox.backend
        # Rename first (atomic: Dovecot and a reload never see half a mailbox), then remove at leisure.
        doomed = folder.path.with_name(f"{mf.TRASH_PREFIX}{mbox.uidvalidity}-{os.getpid()}-{id(mbox)}")
        try:
            os.rename(folder.path, doomed)
        except OSError as exc:
            raise _io_error(exc) from exc
        shutil.rmtree(doomed, ignore_errors=True)

    def _persist_rename(self, account: Account, renames: list[tuple[MailboxState, str]]) -> None:
        planned = [(mbox, self._folder_path(account, new)) for mbox, new in renames]
        for _, target in planned:
            if target.exists():
                raise StoreError(f"Mailbox directory already exists: {target.name}")
        done: list[tuple[MailboxState, Path]] = []
        try:
            for mbox, target in planned:
                folder: _Folder = mbox.backend
                os.rename(folder.path, target)
                done.append((mbox, folder.path))
                folder.path = target
        except OSError as exc:
            for mbox, old_path in reversed(done):
                os.rename(mbox.backend.path, old_path)
                mbox.backend.path = old_path
            raise _io_error(exc) from exc

    # -- messages ---------------------------------------------------------------------------------------------------
    def _name_for(self, mbox: MailboxState, uid: int, flags: frozenset[str], base: str, in_new: bool
                  ) -> tuple[str, list[str]]:
        """Relative file name for these flags (new/ only for unflagged, unclaimed mail), keyword letters
        assigned and dovecot-keywords rewritten if a new keyword got one."""
        folder: _Folder = mbox.backend
        if mf.assign_keywords(flags, folder.keywords):
            mf.write_keywords(folder.path, folder.keywords)
        letters, extra = mf.info_for(flags, folder.keywords)
        if in_new and not flags:
            return f"new/{base}", extra
        return f"cur/{base}{mf.INFO}{letters}", extra

    def _persist_append(self, account: Account, mbox: MailboxState, record: MessageRecord, raw: bytes) -> None:
        folder: _Folder = mbox.backend
        base = mf.new_base_name(len(raw), mf.virtual_size(raw))
        mtime = int(record.internaldate.timestamp())
        try:
            relfile, extra = self._name_for(mbox, record.uid, record.flags, base, True)
            tmp = folder.path / "tmp" / base
            with open(tmp, "wb") as fh:
                fh.write(raw)
            os.utime(tmp, (mtime, mtime))
            os.rename(tmp, folder.path / relfile)
            mf.append_uidlist(folder.path, record.uid, relfile.split("/", 1)[1])
            self._journal(mbox, ["A", record.uid, record.modseq, relfile, record.size, mtime,
                                 record.message_id, extra])
        except OSError as exc:
            raise _io_error(exc) from exc
        folder.files[record.uid] = relfile
        if extra:
            folder.extra[record.uid] = extra

    @staticmethod
    def _relocate(folder: _Folder, uid: int) -> str | None:
        """Find a message file again after someone else (a Dovecot reading the same Maildir) renamed it:
        moved it from new/ to cur/ or changed its flags. Only runs when the known name is gone."""
        base = mf.base_of(folder.files[uid].split("/", 1)[1])
        for sub in ("cur", "new"):
            try:
                names = os.listdir(folder.path / sub)
            except OSError:
                continue
            for name in names:
                if mf.base_of(name) == base:
                    folder.files[uid] = f"{sub}/{name}"
                    return folder.files[uid]
        return None

    def _read_raw(self, account: Account, mbox: MailboxState, record: MessageRecord) -> bytes:
        folder: _Folder = mbox.backend
        try:
            try:
                return (folder.path / folder.files[record.uid]).read_bytes()
            except FileNotFoundError:
                relfile = self._relocate(folder, record.uid)
                if relfile is None:
                    raise
                return (folder.path / relfile).read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"Message file of UID {record.uid} in {mbox.name} vanished") from exc
        except OSError as exc:
            raise _io_error(exc) from exc

    def _persist_flags(self, account: Account, mbox: MailboxState, old: MessageRecord,
                       new: MessageRecord) -> None:
        folder: _Folder = mbox.backend
        current = folder.files[old.uid]
        base = mf.base_of(current.split("/", 1)[1])
        try:
            relfile, extra = self._name_for(mbox, new.uid, new.flags, base, False)
            if relfile != current:
                try:
                    os.rename(folder.path / current, folder.path / relfile)
                except FileNotFoundError:
                    found = self._relocate(folder, old.uid)
                    if found is None:
                        raise
                    os.rename(folder.path / found, folder.path / relfile)
            self._journal(mbox, ["F", new.uid, new.modseq, relfile, extra])
        except OSError as exc:
            raise _io_error(exc) from exc
        folder.files[new.uid] = relfile
        if extra:
            folder.extra[new.uid] = extra
        else:
            folder.extra.pop(new.uid, None)

    def _persist_expunge(self, account: Account, mbox: MailboxState, records: list[MessageRecord]) -> None:
        folder: _Folder = mbox.backend
        uids = [r.uid for r in records]
        try:
            # Journal first: if we stop half-way, the reload sees missing files and drops them anyway.
            self._journal(mbox, ["X", mbox.highestmodseq + 1, uids])
            for uid in uids:
                try:
                    os.unlink(folder.path / folder.files[uid])
                except FileNotFoundError:
                    found = self._relocate(folder, uid)
                    if found is not None:
                        os.unlink(folder.path / found)
        except OSError as exc:
            raise _io_error(exc) from exc
        for uid in uids:
            folder.files.pop(uid, None)
            folder.extra.pop(uid, None)
        folder.stale_uidlist += len(uids)
        self._maybe_compact(mbox, len(mbox.records) - len(uids))

    def _persist_claim(self, account: Account, mbox: MailboxState, uids: list[int]) -> None:
        """Claimed mail leaves new/ for cur/, as Dovecot does, so \\Recent is not handed out again after a
        restart."""
        folder: _Folder = mbox.backend
        for uid in uids:
            current = folder.files.get(uid, "")
            if not current.startswith("new/"):
                continue
            relfile = f"cur/{current[4:]}{mf.INFO}"
            try:
                try:
                    os.rename(folder.path / current, folder.path / relfile)
                except FileNotFoundError:  # someone else moved it already
                    found = self._relocate(folder, uid)
                    if found is None:
                        continue
                    relfile = found
                self._journal(mbox, ["M", uid, relfile])
            except OSError as exc:
                raise _io_error(exc) from exc
            folder.files[uid] = relfile

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Fold every journal into its snapshot and drop expunged lines from dovecot-uidlist."""
        for account in self._accounts.values():
            for mbox in account.mailboxes.values():
                folder: _Folder = mbox.backend
                if folder.journal_lines:
                    self._write_snapshot(mbox)
                if folder.stale_uidlist:
                    self._write_uidlist(mbox)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        except OSError as exc:
            raise _io_error(exc) from exc
        finally:
            _lock.release(self._lock)
