"""The mail store's public interface: the one API every layer above uses to read and change mail.

Why one interface: SMTP delivery, recall processing, retention and the IMAP server must all see the same
mailboxes and all learn of each other's changes. Whatever changes a mailbox goes through a `MailStore` method,
and every such change is published as a `StoreEvent` to the listeners that subscribed (IMAP sessions turn them
into EXISTS / FETCH / EXPUNGE / VANISHED responses). Two implementations exist: `MemoryStore` (the embedded
default) and `MaildirStore` (on disk, in the layout Dovecot reads).

The API is synchronous on purpose: every call is short, runs on the event loop's thread, and publishes its
event before returning, so "the change happened" and "every session was told" cannot drift apart.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

#: Mailboxes every account has from its creation, with their RFC 6154 special-use attribute.
DEFAULT_MAILBOXES: dict[str, str | None] = {
    "INBOX": None,
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
}

#: The hierarchy separator of every mailbox name in the store.
SEPARATOR = "/"

#: System flags a message may carry (\Recent is per session and lives in the IMAP layer, not here).
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})

FlagMode = Literal["set", "add", "remove"]


class StoreError(Exception):
    """Base of the store's errors; the message is fit to show a client (IMAP turns it into NO)."""


class NoSuchUser(StoreError):
    pass


class NoSuchMailbox(StoreError):
    pass


class MailboxExists(StoreError):
    pass


class NoSuchMessage(StoreError):
    pass


class StoreLocked(StoreError):
    """The store's directory is in use by another process (another lab): two would reuse each other's UIDs."""


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    """A snapshot of one mailbox's state."""

    name: str  # full name, "/"-separated, INBOX always spelled "INBOX"
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    exists: int
    unseen: int
    special_use: str | None = None  # "\\Sent", "\\Trash", "\\Drafts" or None
    subscribed: bool = True


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message's metadata; its bytes come from `MailStore.fetch_raw`."""

    uid: int
    flags: frozenset[str]
    internaldate: datetime  # timezone-aware
    size: int  # octets of the raw message (RFC822.SIZE)
    modseq: int  # RFC 7162 MODSEQ of the last change to this message
    message_id: str | None  # the Message-ID header as written, angle brackets included, or None


@dataclass(frozen=True, slots=True)
class MessageLocation:
    """Where a message with a given Message-ID sits in a user's account."""

    mailbox: str
    uid: int


# --- events -----------------------------------------------------------------------------------------------
# Every event names the user and mailbox it concerns; `origin` is the opaque token the caller passed to the
# method that caused it (an IMAP session passes itself, so it can tell its own changes from others').


@dataclass(frozen=True, slots=True)
class MessageAppended:
    user: str
    mailbox: str
    record: MessageRecord
    origin: object | None = None


@dataclass(frozen=True, slots=True)
class FlagsChanged:
    user: str
    mailbox: str
    record: MessageRecord  # the message after the change (new flags, new modseq)
    origin: object | None = None


@dataclass(frozen=True, slots=True)
class MessagesExpunged:
    user: str
    mailbox: str
    uids: tuple[int, ...]  # ascending
    modseq: int  # the mailbox's HIGHESTMODSEQ after the expunge
    origin: object | None = None


@dataclass(frozen=True, slots=True)
class MailboxCreated:
    user: str
    mailbox: str
    origin: object | None = None


@dataclass(frozen=True, slots=True)
class MailboxDeleted:
    user: str
    mailbox: str
    origin: object | None = None


@dataclass(frozen=True, slots=True)
class MailboxRenamed:
    user: str
    mailbox: str  # the old name
    new_name: str
    origin: object | None = None


StoreEvent = MessageAppended | FlagsChanged | MessagesExpunged | MailboxCreated | MailboxDeleted | MailboxRenamed
Listener = Callable[[StoreEvent], None]


@dataclass(frozen=True, slots=True)
class MessagesRemoving:
    """Messages about to leave the user's account for good, told to removal listeners BEFORE their bytes are gone
    (see `MailStore.subscribe_removals`). A move is not a removal; an expunge (IMAP EXPUNGE / UID EXPUNGE /
    CLOSE, a recall, a retention purge) and the deletion of a mailbox that still holds messages are."""

    user: str
    mailbox: str
    records: tuple[MessageRecord, ...]  # ascending UID
    origin: object | None  # as passed to the method that removes them (an IMAP session passes itself)
    cause: Literal["expunge", "mailbox-deleted"]
    read: Callable[[int], bytes]  # the bytes of one of `records` by UID; valid only while the listener runs


RemovalListener = Callable[[MessagesRemoving], None]


@dataclass(frozen=True, slots=True)
class FlagUpdate:
    """What `MailStore.store_flags` did."""

    changed: tuple[MessageRecord, ...] = ()  # records after the change, for messages whose flags changed
    unchanged: tuple[MessageRecord, ...] = ()  # records of messages the update left as they were
    failed_modified: tuple[int, ...] = field(default=())  # UIDs refused by UNCHANGEDSINCE (RFC 7162 MODIFIED)


class MailStore(abc.ABC):
    """All mailboxes of all users of one lab (or one domain); see the module docstring for the contract.

    Rules every implementation keeps:
    - UIDs in a mailbox strictly ascend and are never reused, also across restarts and after a mailbox is
      deleted and created again (then its UIDVALIDITY changes).
    - UIDVALIDITY is fixed for a mailbox's life.
    - MODSEQ: one counter per mailbox; every append, flag change and expunge takes the next value.
    - `find_by_message_id` is O(1) in the mailbox size (an index kept per user).
    - Every change publishes its event to every listener before the method returns.
    - Mailbox names are case-sensitive except INBOX, which any case names.
    """

    # -- listeners --------------------------------------------------------------------------------------
    @abc.abstractmethod
    def subscribe(self, listener: Listener) -> None:
        """Call `listener(event)` for every change to any mailbox, synchronously, in order."""

    @abc.abstractmethod
    def unsubscribe(self, listener: Listener) -> None: ...

    @abc.abstractmethod
    def subscribe_removals(self, listener: RemovalListener) -> None:
        """Call `listener(MessagesRemoving)` inside every expunge and every deletion of a non-empty mailbox,
        before anything is removed (so it can still read the bytes), synchronously; a listener that raises is
        logged and the removal goes on. Why a hook of its own and not `MessagesExpunged`: that event comes after
        the bytes are gone, and a server keeping deleted items (Exchange's Recoverable Items) needs them."""

    @abc.abstractmethod
    def unsubscribe_removals(self, listener: RemovalListener) -> None:
        """Stop telling `listener`; an unknown listener is ignored."""

    # -- accounts ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def ensure_user(self, user: str) -> None:
        """Create the account (with DEFAULT_MAILBOXES) if it does not exist yet; idempotent."""

    @abc.abstractmethod
    def users(self) -> list[str]: ...

    # -- mailboxes --------------------------------------------------------------------------------------
    @abc.abstractmethod
    def list_mailboxes(self, user: str) -> list[MailboxInfo]:
        """Every mailbox of the user, sorted by name (INBOX first)."""

    @abc.abstractmethod
    def mailbox(self, user: str, name: str) -> MailboxInfo:
        """Raises NoSuchMailbox."""

    @abc.abstractmethod
    def create_mailbox(self, user: str, name: str, special_use: str | None = None,
                       origin: object | None = None) -> MailboxInfo:
        """Raises MailboxExists. Creating "a/b/c" creates missing parents, as RFC 3501 allows."""

    @abc.abstractmethod
    def delete_mailbox(self, user: str, name: str, origin: object | None = None) -> None:
        """Raises NoSuchMailbox; INBOX cannot be deleted (StoreError)."""

    @abc.abstractmethod
    def rename_mailbox(self, user: str, old: str, new: str, origin: object | None = None) -> None:
        """Renames the mailbox and its children. Renaming INBOX moves its messages to a new mailbox and
        leaves INBOX empty (RFC 3501 6.3.5)."""

    @abc.abstractmethod
    def set_subscribed(self, user: str, name: str, subscribed: bool) -> None: ...

    @abc.abstractmethod
    def subscriptions(self, user: str) -> list[str]: ...

    # -- messages ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def append(self, user: str, mailbox: str, raw: bytes, flags: Iterable[str] = (),
               internaldate: datetime | None = None, origin: object | None = None) -> MessageRecord:
        """Store a message (IMAP APPEND, SMTP delivery, a Sent copy). The Message-ID index is updated."""

    def deliver(self, user: str, raw: bytes, mailbox: str = "INBOX", origin: object | None = None
                ) -> MessageRecord:
        """Local delivery: `append` to the user's INBOX (or the mailbox given) with no flags."""
        return self.append(user, mailbox, raw, (), None, origin)

    @abc.abstractmethod
    def messages(self, user: str, mailbox: str) -> list[MessageRecord]:
        """Every message of the mailbox, ascending UID order (the IMAP sequence order)."""

    def get(self, user: str, mailbox: str, uid: int) -> MessageRecord:
        """One message's record by UID, O(1) in both implementations. Raises NoSuchMessage."""
        for record in self.messages(user, mailbox):
            if record.uid == uid:
                return record
        raise NoSuchMessage(f"No message with UID {uid} in {mailbox}")

    def uid_range(self, user: str, mailbox: str, first: int = 1, last: int | None = None
                  ) -> list[MessageRecord]:
        """Records with first <= UID <= last (last None: to the end), ascending; O(log n + k) in both
        implementations, for UID FETCH/STORE n:m and CONDSTORE without copying the whole mailbox."""
        return [r for r in self.messages(user, mailbox) if r.uid >= first and (last is None or r.uid <= last)]

    @abc.abstractmethod
    def fetch_raw(self, user: str, mailbox: str, uid: int) -> bytes:
        """The message's bytes exactly as stored. Raises NoSuchMessage."""

    @abc.abstractmethod
    def find_by_message_id(self, user: str, message_id: str) -> list[MessageLocation]:
        """Where the user's messages with this Message-ID are (any mailbox), O(1). `message_id` is compared
        with its angle brackets and surrounding space stripped, case-sensitively (RFC 5322 msg-id)."""

    @abc.abstractmethod
    def store_flags(self, user: str, mailbox: str, uids: Sequence[int], flags: Iterable[str],
                    mode: FlagMode = "set", unchanged_since: int | None = None,
                    origin: object | None = None) -> FlagUpdate:
        """Change flags; a message whose flags do not change keeps its MODSEQ and emits no event.
        With `unchanged_since`, messages whose MODSEQ is greater are left alone and reported in
        `failed_modified`. Unknown UIDs are ignored."""

    @abc.abstractmethod
    def copy(self, user: str, mailbox: str, uids: Sequence[int], dest: str,
             origin: object | None = None) -> list[tuple[int, int]]:
        """Copy messages with their flags (internaldate kept); returns (source uid, new uid) pairs in source
        UID order. Raises NoSuchMailbox for the destination."""

    @abc.abstractmethod
    def move(self, user: str, mailbox: str, uids: Sequence[int], dest: str,
             origin: object | None = None) -> list[tuple[int, int]]:
        """Copy then expunge the sources (RFC 6851 MOVE), as one change to each mailbox."""

    @abc.abstractmethod
    def expunge(self, user: str, mailbox: str, uids: Sequence[int] | None = None,
                origin: object | None = None) -> list[int]:
        """Remove messages for good. `uids=None`: every message flagged \\Deleted (IMAP EXPUNGE); otherwise
        exactly those UIDs, whatever their flags (UID EXPUNGE filters by \\Deleted itself; recall and
        retention remove by UID). Returns the removed UIDs, ascending."""

    @abc.abstractmethod
    def claim_recent(self, user: str, mailbox: str, uids: Iterable[int]) -> set[int]:
        """Of these UIDs, those that no IMAP session has claimed as \\Recent yet, now claimed: so that
        \\Recent is given to exactly one session (RFC 3501 2.3.2)."""

    def peek_recent(self, user: str, mailbox: str) -> set[int]:
        """The UIDs no IMAP session has claimed as \\Recent yet, without claiming them: what STATUS RECENT
        counts and EXAMINE shows (RFC 3501 6.3.2, 6.3.10). Implementations should override; this default
        cannot tell and says none."""
        return set()

    # -- write-ahead records of changes across mailboxes ------------------------------------------------
    @abc.abstractmethod
    def begin_operation(self, op_id: str, record: Mapping[str, Any]) -> None:
        """Keep `record` (a JSON object: what a change across many mailboxes decided, and what finishing it
        needs) under `op_id` before the change's first step; durable when this returns on a store that
        survives restarts. Raises StoreError for an id outside [A-Za-z0-9._@+-] or a record that is not JSON."""

    @abc.abstractmethod
    def end_operation(self, op_id: str) -> None:
        """The change is complete: forget its record (an unknown id is ignored)."""

    @abc.abstractmethod
    def unfinished_operations(self) -> dict[str, dict[str, Any]]:
        """Records begun and not ended (after a restart: those a crash cut short), by id, as copies."""

    def sync(self, user: str | None = None) -> None:  # noqa: B027 - optional hook
        """Bring the store's view up to date with changes made elsewhere and publish their events (one user, or
        every user for None). The in-process stores see every change as it is made, so this does nothing; a
        store over a real server (DovecotStore) asks it what its own IMAP clients changed."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files or handles; the memory store has none."""
