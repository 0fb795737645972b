"""The store's rules, written once: UIDs, MODSEQ, names, flags, the Message-ID index and events.

Why a shared core: the memory and Maildir stores must behave identically (the lab may switch between them,
and a property test compares them), so the rules live here and an implementation only says where bytes and
metadata are kept, through the `_persist_*` / `_load_*` hooks. Every hook runs BEFORE the in-memory state
changes and before the event is published, so a failing disk write leaves the store as it was.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

from recall_lab.fake_servers.store._events import EventBus
from recall_lab.fake_servers.store._flags import normalize_flags
from recall_lab.fake_servers.store._msgid import MessageIdIndex, extract_message_id
from recall_lab.fake_servers.store._names import INBOX, canonical, is_descendant, parents, sort_key, user_key
from recall_lab.fake_servers.store._operations import Operations
from recall_lab.fake_servers.store.base import (
    DEFAULT_MAILBOXES,
    FlagMode,
    FlagsChanged,
    FlagUpdate,
    Listener,
    MailboxCreated,
    MailboxDeleted,
    MailboxExists,
    MailboxInfo,
    MailboxRenamed,
    MailStore,
    MessageAppended,
    MessageLocation,
    MessageRecord,
    MessagesExpunged,
    MessagesRemoving,
    NoSuchMailbox,
    NoSuchMessage,
    NoSuchUser,
    RemovalListener,
    StoreError,
)

log = logging.getLogger(__name__)


def _message_id(raw: bytes) -> str | None:
    """extract_message_id with a fast path for the usual message (CRLF header block, one unfolded Message-ID
    line): C-speed finds instead of two regex scans, since every delivery appends twice (INBOX, Sent).
    Anything else (bare LFs, folding, no such line) goes to extract_message_id, so results are identical."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return extract_message_id(raw)
    head = raw[:end].lower()
    if head.count(b"\n") != head.count(b"\r\n"):  # a bare LF: the header block may end earlier
        return extract_message_id(raw)
    pos = head.find(b"message-id:")
    if pos < 0 or (pos > 0 and (head[pos - 1] != 10 or head.startswith(b"message-id")
                                or b"\nmessage-id" in head[:pos])):
        return extract_message_id(raw)
    stop = head.find(b"\n", pos)
    stop = end if stop < 0 else stop
    if stop < end and head[stop + 1] in (9, 32):  # folded: let the general code unfold it
        return extract_message_id(raw)
    value = raw[pos + 11:stop].strip()
    return value.decode("utf-8", errors="replace") if value else None

SPECIAL_USES = frozenset({"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"})
_SEEN = "\\Seen"
_DELETED = "\\Deleted"
_MAX_UID = 2**32 - 1


def normalize_date(when: datetime | None) -> datetime:
    """Whole seconds (IMAP INTERNALDATE and Maildir mtimes have no finer grain); naive means UTC."""
    if when is None:
        return datetime.fromtimestamp(int(time.time()), tz=UTC)
    if not isinstance(when, datetime):
        raise StoreError(f"Invalid internal date: {when!r}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.replace(microsecond=0)


class MailboxState:
    """One mailbox in memory. `records` is insertion-ordered and UIDs only grow, so it is in UID order
    without ever sorting; `_uid_list` is a lazily rebuilt sorted list for range lookups by bisection."""

    __slots__ = ("name", "uidvalidity", "uidnext", "highestmodseq", "special_use", "records", "unseen",
                 "claimed", "_uid_list", "backend")

    def __init__(self, name: str, uidvalidity: int, uidnext: int = 1, highestmodseq: int = 0,
                 special_use: str | None = None) -> None:
        self.name = name
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.highestmodseq = highestmodseq
        self.special_use = special_use
        self.records: dict[int, MessageRecord] = {}
        self.unseen = 0
        self.claimed: set[int] = set()
        self._uid_list: list[int] | None = []
        self.backend: Any = None  # implementation-specific data (the Maildir store keeps file names here)

    # -- record bookkeeping (no events, no persistence) ----------------------------------------------------
    def add(self, record: MessageRecord) -> None:
        self.records[record.uid] = record
        if _SEEN not in record.flags:
            self.unseen += 1
        if self._uid_list is not None:
            self._uid_list.append(record.uid)
        if record.uid >= self.uidnext:
            self.uidnext = record.uid + 1
        if record.modseq > self.highestmodseq:
            self.highestmodseq = record.modseq

    def replace_record(self, record: MessageRecord) -> None:
        old = self.records[record.uid]
        self.unseen += (_SEEN not in record.flags) - (_SEEN not in old.flags)
        self.records[record.uid] = record
        if record.modseq > self.highestmodseq:
            self.highestmodseq = record.modseq

    def remove(self, uid: int) -> MessageRecord:
        record = self.records.pop(uid)
        if _SEEN not in record.flags:
            self.unseen -= 1
        self.claimed.discard(uid)
        self._uid_list = None
        return record

    def uid_list(self) -> list[int]:
        if self._uid_list is None:
            self._uid_list = list(self.records)
        return self._uid_list

    def next_modseq(self) -> int:
        self.highestmodseq += 1
        return self.highestmodseq


class Account:
    """One user's mailboxes, subscriptions and Message-ID index.

    `retired` remembers the UIDNEXT of mailboxes that were deleted or renamed away, so a mailbox created again
    under that name continues the UIDs instead of reusing them (and gets a new UIDVALIDITY too).
    """

    __slots__ = ("name", "mailboxes", "subscriptions", "index", "retired", "backend")

    def __init__(self, name: str) -> None:
        self.name = name
        self.mailboxes: dict[str, MailboxState] = {}
        self.subscriptions: dict[str, None] = {}
        self.index = MessageIdIndex()
        self.retired: dict[str, int] = {}
        self.backend: Any = None


class CoreStore(MailStore):
    """`MailStore` rules over in-memory state, with persistence hooks that do nothing here."""

    def __init__(self, operations: Operations | None = None) -> None:
        self._bus = EventBus()
        self._removal_listeners: list[RemovalListener] = []
        self._accounts: dict[str, Account] = {}
        self._last_uidvalidity = 0
        self._operations = operations if operations is not None else Operations()

    # -- hooks for implementations ---------------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        """Refuse a (canonical) mailbox name this storage cannot hold, before anything is created."""

    def _load_account(self, user: str) -> Account | None:
        """An account that exists in storage but is not loaded yet, or None."""
        return None

    def _stored_users(self) -> Iterable[str]:
        return ()

    def _persist_account(self, account: Account) -> None:
        pass

    def _persist_create(self, account: Account, mbox: MailboxState) -> None:
        pass

    def _persist_delete(self, account: Account, mbox: MailboxState) -> None:
        pass

    def _persist_rename(self, account: Account, renames: list[tuple[MailboxState, str]]) -> None:
        """`renames`: (mailbox, new name) pairs, the mailbox still carrying its old name."""

    def _persist_append(self, account: Account, mbox: MailboxState, record: MessageRecord, raw: bytes) -> None:
        raise NotImplementedError

    def _read_raw(self, account: Account, mbox: MailboxState, record: MessageRecord) -> bytes:
        raise NotImplementedError

    def _persist_flags(self, account: Account, mbox: MailboxState, old: MessageRecord,
                       new: MessageRecord) -> None:
        pass

    def _persist_expunge(self, account: Account, mbox: MailboxState, records: list[MessageRecord]) -> None:
        pass

    def _persist_subscriptions(self, account: Account) -> None:
        pass

    def _persist_claim(self, account: Account, mbox: MailboxState, uids: list[int]) -> None:
        pass

    def _persist_retired(self, account: Account) -> None:
        pass

    # -- helpers -----------------------------------------------------------------------------------------
    def _new_uidvalidity(self) -> int:
        """Seconds since the epoch, but always above any value given before (a mailbox deleted and created
        again within one second still gets a new UIDVALIDITY)."""
        value = max(int(time.time()), self._last_uidvalidity + 1)
        if value > _MAX_UID:
            raise StoreError("UIDVALIDITY space exhausted")
        self._last_uidvalidity = value
        return value

    def _account(self, user: str) -> Account:
        key = user_key(user) if isinstance(user, str) else user
        account = self._accounts.get(key)
        if account is None:
            account = self._load_account(key) if isinstance(key, str) and key else None
            if account is None:
                raise NoSuchUser(f"No such user: {user}")
            self._accounts[key] = account
        return account

    @staticmethod
    def _mbox(account: Account, name: str) -> MailboxState:
        key = canonical(name)
        mbox = account.mailboxes.get(key)
        if mbox is None:
            raise NoSuchMailbox(f"Mailbox doesn't exist: {name}")
        return mbox

    @staticmethod
    def _info(account: Account, mbox: MailboxState) -> MailboxInfo:
        return MailboxInfo(
            name=mbox.name,
            uidvalidity=mbox.uidvalidity,
            uidnext=mbox.uidnext,
            highestmodseq=mbox.highestmodseq,
            exists=len(mbox.records),
            unseen=mbox.unseen,
            special_use=mbox.special_use,
            subscribed=mbox.name in account.subscriptions,
        )

    def _new_mailbox(self, account: Account, name: str, special_use: str | None) -> MailboxState:
        mbox = MailboxState(name, self._new_uidvalidity(), account.retired.get(name, 1), 0, special_use)
        return mbox

    def _create_one(self, account: Account, name: str, special_use: str | None, origin: object | None
                    ) -> MailboxState:
        mbox = self._new_mailbox(account, name, special_use)
        self._persist_create(account, mbox)
        account.mailboxes[name] = mbox
        if name not in account.subscriptions:
            account.subscriptions[name] = None
            self._persist_subscriptions(account)
        self._bus.publish(MailboxCreated(account.name, name, origin))
        return mbox

    def _append_record(self, account: Account, mbox: MailboxState, raw: bytes, flags: frozenset[str],
                       internaldate: datetime, message_id: str | None) -> MessageRecord:
        uid = mbox.uidnext
        if uid > _MAX_UID:
            raise StoreError(f"Mailbox {mbox.name} has run out of UIDs")
        record = MessageRecord(uid, flags, internaldate, len(raw), mbox.highestmodseq + 1, message_id)
        self._persist_append(account, mbox, record, raw)
        mbox.add(record)
        account.index.add(message_id, mbox.name, uid)
        return record

    def _announce_removal(self, account: Account, mbox: MailboxState, records: list[MessageRecord],
                          origin: object | None, cause: Literal["expunge", "mailbox-deleted"]) -> None:
        """Tell the removal listeners, while the bytes can still be read (before any `_persist_*` hook)."""
        if not self._removal_listeners or not records:
            return
        by_uid = {record.uid: record for record in records}

        def read(uid: int) -> bytes:
            record = by_uid.get(uid)
            if record is None:
                raise NoSuchMessage(f"UID {uid} is not among the messages being removed from {mbox.name}")
            return self._read_raw(account, mbox, record)

        removing = MessagesRemoving(account.name, mbox.name, tuple(records), origin, cause, read)
        for listener in tuple(self._removal_listeners):
            try:
                listener(removing)
            except Exception:  # noqa: BLE001 - a listener must not stop the user's deletion
                log.exception("store removal listener %r failed on %s/%s", listener, account.name, mbox.name)

    def _expunge_records(self, account: Account, mbox: MailboxState, uids: list[int],
                         origin: object | None, removal: bool = True) -> list[int]:
        """`removal`: the messages leave the account (False for the source side of a move)."""
        if not uids:
            return []
        records = [mbox.records[uid] for uid in uids]
        if removal:
            self._announce_removal(account, mbox, records, origin, "expunge")
        modseq = mbox.highestmodseq + 1
        self._persist_expunge(account, mbox, records)
        mbox.highestmodseq = modseq
        for record in records:
            mbox.remove(record.uid)
            account.index.remove(record.message_id, mbox.name, record.uid)
        self._bus.publish(MessagesExpunged(account.name, mbox.name, tuple(uids), modseq, origin))
        return uids

    @staticmethod
    def _existing(mbox: MailboxState, uids: Iterable[int]) -> list[int]:
        records = mbox.records
        return sorted({uid for uid in uids if uid in records})

    # -- listeners ---------------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        self._bus.subscribe(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._bus.unsubscribe(listener)

    def subscribe_removals(self, listener: RemovalListener) -> None:
        self._removal_listeners.append(listener)

    def unsubscribe_removals(self, listener: RemovalListener) -> None:
        try:
            self._removal_listeners.remove(listener)
        except ValueError:
            pass

    # -- accounts ----------------------------------------------------------------------------------------
    def ensure_user(self, user: str) -> None:
        key = user_key(user)
        if not key:
            raise StoreError("User name is empty")
        if key in self._accounts:
            return
        loaded = self._load_account(key)
        if loaded is not None:
            self._accounts[key] = loaded
            return
        account = Account(key)
        self._persist_account(account)
        self._accounts[key] = account
        for name, special_use in DEFAULT_MAILBOXES.items():
            self._create_one(account, name, special_use, None)

    def users(self) -> list[str]:
        return sorted(set(self._accounts).union(self._stored_users()))

    # -- mailboxes ---------------------------------------------------------------------------------------
    def list_mailboxes(self, user: str) -> list[MailboxInfo]:
        account = self._account(user)
        return [self._info(account, account.mailboxes[name])
                for name in sorted(account.mailboxes, key=sort_key)]

    def mailbox(self, user: str, name: str) -> MailboxInfo:
        account = self._account(user)
        return self._info(account, self._mbox(account, name))

    def create_mailbox(self, user: str, name: str, special_use: str | None = None,
                       origin: object | None = None) -> MailboxInfo:
        account = self._account(user)
        key = canonical(name)
        if key in account.mailboxes:
            raise MailboxExists(f"Mailbox already exists: {key}")
        if special_use is not None and special_use not in SPECIAL_USES:
            raise StoreError(f"Unknown special-use attribute: {special_use}")
        self._check_name(key)
        for parent in parents(key):
            if parent not in account.mailboxes:
                self._create_one(account, parent, None, origin)
        mbox = self._create_one(account, key, special_use, origin)
        return self._info(account, mbox)

    def delete_mailbox(self, user: str, name: str, origin: object | None = None) -> None:
        account = self._account(user)
        mbox = self._mbox(account, name)
        if mbox.name == INBOX:
            raise StoreError("INBOX can't be deleted")
        self._announce_removal(account, mbox, list(mbox.records.values()), origin, "mailbox-deleted")
        self._persist_delete(account, mbox)
        del account.mailboxes[mbox.name]
        for record in mbox.records.values():
            account.index.remove(record.message_id, mbox.name, record.uid)
        account.retired[mbox.name] = mbox.uidnext
        self._persist_retired(account)
        if account.subscriptions.pop(mbox.name, 0) is None:
            self._persist_subscriptions(account)
        self._bus.publish(MailboxDeleted(account.name, mbox.name, origin))

    def rename_mailbox(self, user: str, old: str, new: str, origin: object | None = None) -> None:
        account = self._account(user)
        source = self._mbox(account, old)
        target = canonical(new)
        if target in account.mailboxes:
            raise MailboxExists(f"Mailbox already exists: {target}")
        if is_descendant(target, source.name):
            raise StoreError(f"Can't rename mailbox {source.name} under itself")
        if source.name == INBOX:
            self._check_name(target)
            self._rename_inbox(account, source, target, origin)
            return
        moving = [source] + [account.mailboxes[name] for name in sorted(account.mailboxes)
                             if is_descendant(name, source.name)]
        renames = [(mbox, target + mbox.name[len(source.name):]) for mbox in moving]
        for _, new_name in renames:
            if new_name in account.mailboxes:
                raise MailboxExists(f"Mailbox already exists: {new_name}")
            self._check_name(new_name)
        for parent in parents(target):
            if parent not in account.mailboxes:
                self._create_one(account, parent, None, origin)
        self._persist_rename(account, renames)
        subscriptions_changed = False
        moved: list[tuple[str, str]] = []
        for mbox, new_name in renames:
            old_name = mbox.name
            moved.append((old_name, new_name))
            del account.mailboxes[old_name]
            mbox.name = new_name
            account.mailboxes[new_name] = mbox
            account.retired[old_name] = max(account.retired.get(old_name, 1), mbox.uidnext)
            for record in mbox.records.values():
                account.index.remove(record.message_id, old_name, record.uid)
                account.index.add(record.message_id, new_name, record.uid)
            if account.subscriptions.pop(old_name, 0) is None:
                account.subscriptions[new_name] = None
                subscriptions_changed = True
        self._persist_retired(account)
        if subscriptions_changed:
            self._persist_subscriptions(account)
        for old_name, new_name in moved:
            self._bus.publish(MailboxRenamed(account.name, old_name, new_name, origin))

    def _rename_inbox(self, account: Account, inbox: MailboxState, target: str, origin: object | None) -> None:
        """RFC 3501 6.3.5: INBOX's messages move to a new mailbox; INBOX stays, empty, same UIDVALIDITY."""
        self.create_mailbox(account.name, target, None, origin)
        self.move(account.name, INBOX, list(inbox.records), target, origin)

    def set_subscribed(self, user: str, name: str, subscribed: bool) -> None:
        account = self._account(user)
        key = canonical(name)
        if subscribed and key not in account.subscriptions:
            account.subscriptions[key] = None
        elif not subscribed and key in account.subscriptions:
            del account.subscriptions[key]
        else:
            return
        self._persist_subscriptions(account)

    def subscriptions(self, user: str) -> list[str]:
        return sorted(self._account(user).subscriptions, key=sort_key)

    # -- messages ----------------------------------------------------------------------------------------
    def append(self, user: str, mailbox: str, raw: bytes, flags: Iterable[str] = (),
               internaldate: datetime | None = None, origin: object | None = None) -> MessageRecord:
        account = self._account(user)
        mbox = self._mbox(account, mailbox)
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise StoreError("A message must be bytes")
        raw = bytes(raw)
        record = self._append_record(account, mbox, raw, normalize_flags(flags), normalize_date(internaldate),
                                     _message_id(raw))
        self._bus.publish(MessageAppended(account.name, mbox.name, record, origin))
        return record

    def messages(self, user: str, mailbox: str) -> list[MessageRecord]:
        account = self._account(user)
        return list(self._mbox(account, mailbox).records.values())

    def get(self, user: str, mailbox: str, uid: int) -> MessageRecord:
        account = self._account(user)
        record = self._mbox(account, mailbox).records.get(uid)
        if record is None:
            raise NoSuchMessage(f"No message with UID {uid} in {mailbox}")
        return record

    def uid_range(self, user: str, mailbox: str, first: int = 1, last: int | None = None
                  ) -> list[MessageRecord]:
        account = self._account(user)
        mbox = self._mbox(account, mailbox)
        uids = mbox.uid_list()
        lo = bisect.bisect_left(uids, first)
        hi = len(uids) if last is None else bisect.bisect_right(uids, last)
        records = mbox.records
        return [records[uid] for uid in uids[lo:hi]]

    def fetch_raw(self, user: str, mailbox: str, uid: int) -> bytes:
        account = self._account(user)
        mbox = self._mbox(account, mailbox)
        record = mbox.records.get(uid)
        if record is None:
            raise NoSuchMessage(f"No message with UID {uid} in {mailbox}")
        return self._read_raw(account, mbox, record)

    def find_by_message_id(self, user: str, message_id: str) -> list[MessageLocation]:
        return self._account(user).index.find(message_id)

    def store_flags(self, user: str, mailbox: str, uids: Sequence[int], flags: Iterable[str],
                    mode: FlagMode = "set", unchanged_since: int | None = None,
                    origin: object | None = None) -> FlagUpdate:
        account = self._account(user)
        mbox = self._mbox(account, mailbox)
        wanted = normalize_flags(flags)
        if mode not in ("set", "add", "remove"):
            raise StoreError(f"Unknown flag mode: {mode}")
        changed: list[MessageRecord] = []
        unchanged: list[MessageRecord] = []
        failed: list[int] = []
        for uid in self._existing(mbox, uids):
            old = mbox.records[uid]
            if unchanged_since is not None and old.modseq > unchanged_since:
                failed.append(uid)
                continue
            if mode == "set":
                new_flags = wanted
            elif mode == "add":
                new_flags = old.flags | wanted
            else:
                new_flags = old.flags - wanted
            if new_flags == old.flags:
                unchanged.append(old)
                continue
            new = replace(old, flags=new_flags, modseq=mbox.highestmodseq + 1)
            self._persist_flags(account, mbox, old, new)
            mbox.replace_record(new)
            changed.append(new)
            self._bus.publish(FlagsChanged(account.name, mbox.name, new, origin))
        return FlagUpdate(tuple(changed), tuple(unchanged), tuple(failed))

    def copy(self, user: str, mailbox: str, uids: Sequence[int], dest: str,
             origin: object | None = None) -> list[tuple[int, int]]:
        account = self._account(user)
        source = self._mbox(account, mailbox)
        target = self._mbox(account, dest)
        pairs: list[tuple[int, int]] = []
        for uid in self._existing(source, uids):
            old = source.records[uid]
            raw = self._read_raw(account, source, old)
            record = self._append_record(account, target, raw, old.flags, old.internaldate, old.message_id)
            pairs.append((uid, record.uid))
            self._bus.publish(MessageAppended(account.name, target.name, record, origin))
        return pairs

    def move(self, user: str, mailbox: str, uids: Sequence[int], dest: str,
             origin: object | None = None) -> list[tuple[int, int]]:
        account = self._account(user)
        source = self._mbox(account, mailbox)
        pairs = self.copy(user, mailbox, uids, dest, origin)
        self._expunge_records(account, source, [src for src, _ in pairs], origin, removal=False)
        return pairs

    def expunge(self, user: str, mailbox: str, uids: Sequence[int] | None = None,
                origin: object | None = None) -> list[int]:
        account = self._account(user)
        mbox = self._mbox(account, mailbox)
        if uids is None:
            targets = [uid for uid, record in mbox.records.items() if _DELETED in record.flags]
        else:
            targets = self._existing(mbox, uids)
        return self._expunge_records(account, mbox, targets, origin)

    def peek_recent(self, user: str, mailbox: str) -> set[int]:
        """UIDs no session has claimed as \\Recent yet, left unclaimed (STATUS and EXAMINE only look)."""
        mbox = self._mbox(self._account(user), mailbox)
        return {uid for uid in mbox.records if uid not in mbox.claimed}

    def claim_recent(self, user: str, mailbox: str, uids: Iterable[int]) -> set[int]:
        account = self._account(user)
        mbox = self._mbox(account, mailbox)
        records = mbox.records
        fresh = sorted({uid for uid in uids if uid in records and uid not in mbox.claimed})
        if fresh:
            self._persist_claim(account, mbox, fresh)
            mbox.claimed.update(fresh)
        return set(fresh)

    # -- write-ahead records ------------------------------------------------------------------------------
    def begin_operation(self, op_id: str, record: Mapping[str, Any]) -> None:
        self._operations.begin(op_id, record)

    def end_operation(self, op_id: str) -> None:
        self._operations.end(op_id)

    def unfinished_operations(self) -> dict[str, dict[str, Any]]:
        return self._operations.unfinished()
