"""A `MailStore` whose mail lives in a real Dovecot: delivery over LMTP, everything else over IMAP as a master user.

Why: "would a real server behave the same?" The lab's SMTP side, its policies (cloud recall, retention, legal
hold, delayed send), its clients and its scenarios all reach mail through the `MailStore` API. Put Dovecot
behind that API and they run unchanged against a real IMAP server, while the users' own clients talk to
Dovecot's IMAP port directly. Nothing here writes Dovecot's files: new mail goes in over LMTP (as an MTA would
hand it over), and reads and changes go over IMAP, logged in as each user through Dovecot's master-user login
(`user*master`), the way an administrator's tool acts on a mailbox.

How the store keeps its promises over a remote server:
- A local view per user (mailboxes, records, the Message-ID index) is brought up to date from Dovecot before
  every read (one STATUS per mailbox; a mailbox is fetched again only when its HIGHESTMODSEQ, UIDNEXT or
  UIDVALIDITY moved) and after every change the store makes. Bringing it up to date is where events come from:
  new UIDs -> `MessageAppended`, vanished UIDs -> `MessagesExpunged`, changed MODSEQ -> `FlagsChanged`, so a
  change made by a user's own client over Dovecot's IMAP is published too, the next time anything looks
  (`sync()` looks at once; `watch()` keeps a NOTIFY connection per user so it is also published within about
  Dovecot's notification delay, without anyone asking).
- Events of the store's own changes carry the caller's `origin`, as in the other stores; a change found while
  syncing carries origin None (somebody else made it).
- Removal listeners hear the store's own expunges before the bytes go (read from Dovecot). A message a client
  expunges over Dovecot's IMAP is gone before the lab can know: the lab's Recoverable Items do not see it.
- `claim_recent` says nothing is recent: \\Recent belongs to the IMAP server, which here is Dovecot's.

The API stays synchronous (see base.py): every call is a few request/response exchanges with a Dovecot on
loopback, bounded by a socket timeout, made on the loop's thread as the Maildir store makes its disk writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import logging
import re
import smtplib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imapclient import imap_utf7
from imapclient.response_parser import parse_fetch_response, parse_message_list, parse_response

from recall_lab.fake_servers.store._events import EventBus
from recall_lab.fake_servers.store._flags import normalize_flags
from recall_lab.fake_servers.store._msgid import MessageIdIndex, extract_message_id
from recall_lab.fake_servers.store._names import canonical, parents, sort_key, user_key
from recall_lab.fake_servers.store._operations import Operations
from recall_lab.fake_servers.store.base import (
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

#: What the store fetches of every message it learns of (the `MessageRecord` fields).
_META = "(UID FLAGS INTERNALDATE RFC822.SIZE MODSEQ BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
_STATUS = "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)"
_SPECIAL = frozenset({"\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Flagged"})
_CODE = re.compile(rb"\[([A-Z-]+)(?: ([^\]]*))?\]")
#: The Return-Path final delivery put first (one line: the lab writes it unfolded).
_RETURN_PATH = re.compile(rb"Return-Path:[ \t]*<([^<>\r\n]*)>[ \t]*\r\n", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class DovecotAccess:
    """How to reach one Dovecot: its IMAP and LMTP ports and the master user's login.

    `login_as(user)` is the login name that opens `user`'s mailboxes as the master user (Dovecot's
    `user*master`). `provision(user)` makes the account exist in Dovecot's user database before its first
    login (the harness writes Dovecot's passwd-file; the store never touches Dovecot's files itself)."""

    host: str
    imap_port: int
    lmtp_port: int
    master_password: str
    login_as: Callable[[str], str]
    provision: Callable[[str], None] = lambda _user: None
    timeout: float = 10.0
    #: Master-user IMAP connections kept open (one per user; the least recently used is logged out).
    max_connections: int = 64
    #: Keep a NOTIFY connection per user while a loop runs, so that other clients' changes are published within
    #: Dovecot's notification delay. Off: they are published at the next read or `sync()`. Each watcher costs
    #: Dovecot an inotify instance, of which a Linux user has 128 by default (shared by every Dovecot of the
    #: machine): a run of many short-lived users (the matrix) syncs at its settle points instead.
    watch: bool = True
    #: The hidden namespace where Dovecot's lazy_expunge plugin keeps what a client expunges (".EXPUNGED/"), or
    #: None. With it, a client's expunge over Dovecot's own IMAP reaches the removal listeners too (the lab's
    #: Recoverable Items), read from there, once the store sees it; the copy is then cleared.
    expunged_prefix: str | None = None


@dataclass(slots=True)
class _Box:
    """The store's view of one Dovecot mailbox, as of its last sync."""

    name: str
    uidvalidity: int = 0
    uidnext: int = 1
    highestmodseq: int = 0
    unseen: int = 0
    special_use: str | None = None
    subscribed: bool = True
    records: dict[int, MessageRecord] = field(default_factory=dict)  # ascending UID (inserted in order)


@dataclass(slots=True)
class _Account:
    name: str
    boxes: dict[str, _Box] = field(default_factory=dict)
    index: MessageIdIndex = field(default_factory=MessageIdIndex)


def _quote(name: str) -> str:
    """A mailbox name as an IMAP quoted string, in modified UTF-7 (imaplib sends arguments as they are)."""
    encoded = imap_utf7.encode(name).decode("ascii")
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _decode_name(value: Any) -> str:
    if isinstance(value, bytes):
        return imap_utf7.decode(value)
    return str(value)


def _uid_set(uids: Iterable[int]) -> str:
    ordered = sorted(set(uids))
    parts: list[str] = []
    start = prev = None
    for uid in ordered:
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            parts.append(f"{start}:{prev}" if start != prev else str(start))
        start = prev = uid
    if start is not None:
        parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


def _expand(uid_set: str) -> list[int]:
    out: list[int] = []
    for part in uid_set.split(","):
        lo, _, hi = part.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _status_items(line: Any) -> tuple[str, dict[str, int]] | None:
    """One STATUS response's mailbox name and items ({"MESSAGES": 3, ...}); None for an unreadable one."""
    items = parse_response([line] if isinstance(line, bytes) else list(line))
    if len(items) < 2:
        return None
    values = items[-1]
    return _box_name(_decode_name(items[0])), {values[i].decode().upper(): int(values[i + 1])
                                               for i in range(0, len(values) - 1, 2)}


def _box_name(name: str) -> str:
    """INBOX in any case is INBOX (the stores' spelling); other names as they are."""
    return "INBOX" if name.upper() == "INBOX" else name


def _fetched_message_id(data: Mapping[bytes, Any]) -> str | None:
    """The Message-ID in a FETCH of BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)] (the store's one header reader)."""
    header = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"") or b""
    return extract_message_id(header)


def _flags(values: Iterable[Any]) -> frozenset[str]:
    names = (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values)
    return frozenset(n for n in names if n.lower() != "\\recent")


class _Refused(StoreError):
    """Dovecot answered NO or BAD; `code` is its response code (NONEXISTENT, ALREADYEXISTS, ...)."""

    def __init__(self, text: str, code: str | None) -> None:
        super().__init__(text)
        if code is None and "doesn't exist" in text:
            code = "NONEXISTENT"  # Dovecot's STATUS of a missing mailbox carries no response code
        self.code = code

    @classmethod
    def of_reply(cls, data: list[Any] | str, fallback: str) -> _Refused:
        """From a NO/BAD reply's text (imaplib's data lines, or the text of its exception), with its code."""
        text = data if isinstance(data, str) else b" ".join(d for d in data if isinstance(d, bytes)).decode(
            "utf-8", "replace")
        code = _CODE.search(text.encode("utf-8", "replace"))
        return cls(text or fallback, code.group(1).decode() if code else None)


class _Connection:
    """One master-user IMAP connection to one user's mailboxes (imaplib does the wire; we keep what is selected)."""

    def __init__(self, access: DovecotAccess, user: str) -> None:
        self.imap = imaplib.IMAP4(access.host, access.imap_port, timeout=access.timeout)
        self.selected: tuple[str, bool] | None = None  # (mailbox, read-only)
        self.tagged: list[Any] = []  # the last tagged reply's text
        self.run("LOGIN", access.login_as(user), access.master_password)
        self.run("ENABLE", "QRESYNC")  # CONDSTORE's MODSEQ and VANISHED (EARLIER): a sync in two round trips

    def run(self, command: str, *args: str, want: str | None = None) -> list[Any]:
        """Send one command; the tagged reply's text, or with `want` the untagged responses of that name.
        NO or BAD raise `_Refused` with Dovecot's text and response code."""
        imap = self.imap
        imap.untagged_responses.clear()
        try:
            if command == "LOGIN":
                typ, data = imap.login(args[0], args[1])
            else:
                typ, data = imap._simple_command(command, *args)  # noqa: SLF001 - imaplib's generic command
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            raise _Refused.of_reply(str(exc), f"{command} failed") from None
        if typ != "OK":
            raise _Refused.of_reply(data, f"{command} failed")
        self.tagged = data
        if want is None:
            return data
        return [d for d in imap.untagged_responses.pop(want, []) if d is not None]

    def select(self, mailbox: str, readonly: bool) -> None:
        """Select (or examine) the mailbox; one already selected is brought up to date with a NOOP, since a
        session's view of a mailbox only moves when the server tells it of changes (RFC 9051 5.2)."""
        if self.selected == (mailbox, readonly) or (readonly and self.selected == (mailbox, False)):
            self.run("NOOP")
            return
        self.selected = None
        self.imap.untagged_responses.clear()
        typ, data = self.imap.select(_quote(mailbox), readonly)  # imaplib must know it is in SELECTED state
        if typ != "OK":
            raise _Refused.of_reply(data, "SELECT failed")
        self.selected = (mailbox, readonly)

    def response_code(self, name: str) -> str | None:
        """The argument of response code `name` in the last tagged reply or an untagged OK (COPYUID comes
        untagged before a MOVE's expunges)."""
        for line in [*self.tagged, *self.imap.untagged_responses.get("OK", [])]:
            if isinstance(line, bytes):
                for match in _CODE.finditer(line):
                    if match.group(1) == name.encode():
                        return (match.group(2) or b"").decode()
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.imap.logout()
        with contextlib.suppress(Exception):
            self.imap.shutdown()


class DovecotStore(MailStore):
    """`MailStore` over a running Dovecot (see the module docstring). Example, with the harness's launcher::

        dv = DovecotServer(root, {"bob@corp.example": "pw"}, lmtp=True).start()
        store = DovecotStore(DovecotAccess("127.0.0.1", dv.port, dv.lmtp_port, dv.master_password, dv.login_as,
                                           provision=lambda u: dv.add_user(u, "pw")))
        store.ensure_user("bob@corp.example")
        store.deliver("bob@corp.example", b"Message-ID: <1@x>\\r\\n\\r\\nhi\\r\\n")
    """

    def __init__(self, access: DovecotAccess, operations: Operations | None = None) -> None:
        self.access = access
        self._bus = EventBus()
        self._removal_listeners: list[RemovalListener] = []
        self._accounts: dict[str, _Account] = {}
        self._connections: OrderedDict[str, _Connection] = OrderedDict()
        self._lmtp: smtplib.LMTP | None = None
        self._operations = operations if operations is not None else Operations()
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._special: dict[tuple[str, str], str] = {}  # special-use given at create (Dovecot 2.3 has no CREATE USE)
        self._closed = False

    # -- connections ------------------------------------------------------------------------------------
    def _conn(self, user: str) -> _Connection:
        if self._closed:
            raise StoreError("The Dovecot store is closed")
        conn = self._connections.get(user)
        if conn is not None:
            self._connections.move_to_end(user)
            return conn
        try:
            conn = _Connection(self.access, user)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise StoreError(f"Dovecot at {self.access.host}:{self.access.imap_port} refused {user}: {exc}") from None
        self._connections[user] = conn
        while len(self._connections) > self.access.max_connections:
            _old, victim = self._connections.popitem(last=False)
            victim.close()
        return conn

    def _call(self, user: str, work: Callable[[_Connection], Any]) -> Any:
        """Run `work` on the user's connection; a connection that broke is opened again once."""
        for attempt in (1, 2):
            conn = self._conn(user)
            try:
                return work(conn)
            except (OSError, imaplib.IMAP4.abort, EOFError) as exc:
                self._connections.pop(user, None)
                conn.close()
                if attempt == 2:
                    raise StoreError(f"Dovecot connection for {user} failed: {exc}") from None
        raise AssertionError("unreachable")

    # -- listeners --------------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        self._bus.subscribe(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._bus.unsubscribe(listener)

    def subscribe_removals(self, listener: RemovalListener) -> None:
        self._removal_listeners.append(listener)

    def unsubscribe_removals(self, listener: RemovalListener) -> None:
        with contextlib.suppress(ValueError):
            self._removal_listeners.remove(listener)

    # -- accounts ---------------------------------------------------------------------------------------
    def ensure_user(self, user: str) -> None:
        key = user_key(user)
        if not key:
            raise StoreError("User name is empty")
        if key in self._accounts:
            return
        self.access.provision(key)
        account = _Account(key)
        self._accounts[key] = account
        try:
            self._sync_account(account, None, announce=False)
        except BaseException:
            del self._accounts[key]
            raise
        if not self.access.watch:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a script, a test): changes by others are published at the next read or sync()
        self.watch(key)

    def users(self) -> list[str]:
        return sorted(self._accounts)

    def _account(self, user: str) -> _Account:
        account = self._accounts.get(user_key(user))
        if account is None:
            raise NoSuchUser(f"No such user: {user}")
        return account

    # -- syncing the view -------------------------------------------------------------------------------
    def sync(self, user: str | None = None) -> None:
        """Bring the view of one user (None: every user) up to date with Dovecot now, publishing the events of
        whatever changed there (a client's flags, moves and expunges over Dovecot's IMAP)."""
        accounts = [self._account(user)] if user is not None else list(self._accounts.values())
        for account in accounts:
            self._sync_account(account, None)

    def _listing(self, account: _Account) -> dict[str, tuple[str | None, bool, dict[str, int] | None]]:
        """Dovecot's mailboxes of the user in one round trip (LIST-EXTENDED with LIST-STATUS, RFC 5258/5819):
        name -> (special-use, subscribed, its STATUS or None when none came)."""

        def work(conn: _Connection) -> tuple[list[Any], list[Any]]:
            if conn.selected is not None:
                conn.run("NOOP")  # the selected mailbox's STATUS is the session's view: bring it up to date
            listed = conn.run("LIST", '""', '"*"', f"RETURN (SUBSCRIBED SPECIAL-USE STATUS {_STATUS})", want="LIST")
            return listed, [d for d in conn.imap.untagged_responses.pop("STATUS", []) if d is not None]

        listed, status_lines = self._call(account.name, work)
        statuses = dict(item for item in map(_status_items, status_lines) if item is not None)
        out: dict[str, tuple[str | None, bool, dict[str, int] | None]] = {}
        for flags, _sep, name in self._parse_list(listed):
            names = {f.decode() if isinstance(f, bytes) else str(f) for f in flags}
            if "\\Noselect" in names or "\\NonExistent" in names:
                continue
            special = next((f for f in names if f in _SPECIAL), None)
            out[name] = (self._special.get((account.name, name), special), "\\Subscribed" in names,
                         statuses.get(name))
        return out

    @staticmethod
    def _parse_list(lines: list[Any]) -> list[tuple[tuple[Any, ...], Any, str]]:
        out = []
        for line in lines:
            if line is None:
                continue
            item = list(parse_response([line] if isinstance(line, bytes) else list(line)))
            if len(item) >= 3:
                out.append((tuple(item[0]), item[1], _box_name(_decode_name(item[2]))))
        return out

    def _status(self, account: _Account, name: str) -> dict[str, int]:
        def work(conn: _Connection) -> list[Any]:
            if conn.selected is not None and conn.selected[0] == name:
                conn.run("NOOP")  # STATUS of the selected mailbox answers the session's view: bring it up to date
            return conn.run("STATUS", _quote(name), _STATUS, want="STATUS")

        lines = [d for d in self._call(account.name, work) if isinstance(d, bytes)]
        item = _status_items(lines[-1]) if lines else None
        return item[1] if item is not None else {}

    def _sync_account(self, account: _Account, origin: object | None, announce: bool = True) -> None:
        listing = self._listing(account)
        for name in [n for n in account.boxes if n not in listing]:
            self._forget_box(account, name, origin, announce)
        for name, (special, subscribed, listed_status) in listing.items():
            box = account.boxes.get(name)
            try:
                status = listed_status if listed_status is not None else self._status(account, name)
                if box is None:
                    box = account.boxes[name] = _Box(name, special_use=special, subscribed=subscribed)
                    if announce:
                        self._bus.publish(MailboxCreated(account.name, name, origin))
                box.special_use, box.subscribed = special, subscribed
                self._sync_box(account, box, origin, announce, status)
            except _Refused as exc:
                if exc.code != "NONEXISTENT":
                    raise
                # Maildir++ lists a deleted parent of a live child without \Noselect: it holds nothing
                self._forget_box(account, name, origin, announce)

    def _forget_box(self, account: _Account, name: str, origin: object | None, announce: bool) -> None:
        box = account.boxes.pop(name, None)
        if box is None:
            return
        for record in box.records.values():
            account.index.remove(record.message_id, name, record.uid)
        if announce:
            self._bus.publish(MailboxDeleted(account.name, name, origin))

    def _sync_box(self, account: _Account, box: _Box, origin: object | None, announce: bool = True,
                  status: dict[str, int] | None = None) -> None:
        """Fetch what changed in one mailbox since its last sync and publish it (see the module docstring)."""
        status = status if status is not None else self._status(account, box.name)
        uidvalidity = status.get("UIDVALIDITY", 0)
        modseq = status.get("HIGHESTMODSEQ", 0)
        uidnext = status.get("UIDNEXT", 1)
        if (uidvalidity, modseq, uidnext) == (box.uidvalidity, box.highestmodseq, box.uidnext):
            box.unseen = status.get("UNSEEN", box.unseen)
            return
        if uidvalidity != box.uidvalidity and box.records:  # the mailbox was made again: all of it is new
            gone = tuple(box.records)
            for record in box.records.values():
                account.index.remove(record.message_id, box.name, record.uid)
            box.records = {}
            if announce:
                self._bus.publish(MessagesExpunged(account.name, box.name, gone, modseq, origin))
        since = box.highestmodseq if uidvalidity == box.uidvalidity else 0

        def work(conn: _Connection) -> tuple[set[int] | None, dict[int, Any], dict[int, Any]]:
            """QRESYNC (RFC 7162): one UID FETCH CHANGEDSINCE ... VANISHED names what was expunged, what changed
            and what is new since the last sync; a second fetches the new messages' records."""
            conn.select(box.name, readonly=True)
            if not since or not box.records:
                everything = conn.run("UID", "FETCH", "1:*", _META, want="FETCH")
                fetched = parse_fetch_response(everything, False, True) if everything else {}
                return None, {}, fetched
            lines = conn.run("UID", "FETCH", "1:*", "(UID FLAGS MODSEQ)", f"(CHANGEDSINCE {since} VANISHED)",
                             want="FETCH")
            vanished: set[int] = set()
            for line in conn.imap.untagged_responses.pop("VANISHED", []):
                text = (line or b"").decode("ascii", "replace").replace("(EARLIER)", "").strip()
                if text:
                    vanished.update(_expand(text))
            changed = parse_fetch_response(lines, False, True) if lines else {}
            new = [u for u in changed if u not in box.records and u not in vanished]
            fetched = (parse_fetch_response(conn.run("UID", "FETCH", _uid_set(new), _META, want="FETCH"), False, True)
                       if new else {})
            return vanished, changed, fetched

        vanished, changed, fetched = self._call(account.name, work)
        if vanished is None:  # a whole listing: what is not in it is gone
            gone = tuple(sorted(u for u in box.records if u not in fetched))
        else:
            gone = tuple(sorted(u for u in box.records if u in vanished))
        box.uidvalidity, box.highestmodseq, box.uidnext = uidvalidity, modseq, uidnext
        box.unseen = status.get("UNSEEN", 0)
        if gone:
            removed = [box.records.pop(uid) for uid in gone]
            for record in removed:
                account.index.remove(record.message_id, box.name, record.uid)
            if announce:
                self._bus.publish(MessagesExpunged(account.name, box.name, gone, modseq, origin))
            if origin is None and announce:  # somebody else's expunge: Dovecot's lazy_expunge kept the bytes
                self._take_expunged(account, box.name, removed)
        for uid, data in sorted(changed.items()):
            old = box.records.get(uid)
            if old is None or b"FLAGS" not in data:
                continue
            flags = _flags(data[b"FLAGS"])
            new_modseq = int(data.get(b"MODSEQ", (old.modseq,))[0])
            if flags == old.flags and new_modseq == old.modseq:
                continue
            record = MessageRecord(uid, flags, old.internaldate, old.size, new_modseq, old.message_id)
            box.records[uid] = record
            if announce and flags != old.flags:
                self._bus.publish(FlagsChanged(account.name, box.name, record, origin))
        for uid in sorted(u for u in fetched if u not in box.records):
            data = fetched[uid]
            record = MessageRecord(uid, _flags(data.get(b"FLAGS", ())), data[b"INTERNALDATE"],
                                   int(data[b"RFC822.SIZE"]), int(data.get(b"MODSEQ", (0,))[0]),
                                   _fetched_message_id(data))
            box.records[uid] = record
            account.index.add(record.message_id, box.name, uid)
            if announce:
                self._bus.publish(MessageAppended(account.name, box.name, record, origin))
        if list(box.records) != sorted(box.records):
            box.records = dict(sorted(box.records.items()))

    def _expunged_copies(self, account: _Account, mailbox: str) -> tuple[str, dict[int, Any]]:
        """The lazy_expunge mailbox of `mailbox` and its messages (UID -> FETCH data); empty when it has none."""
        prefix = self.access.expunged_prefix
        assert prefix is not None
        lazy = prefix + mailbox

        def work(conn: _Connection) -> dict[int, Any]:
            try:
                conn.select(lazy, readonly=False)
            except _Refused:
                return {}  # nothing was ever expunged from that mailbox
            uids = list(parse_message_list(conn.run("UID", "SEARCH", "ALL", want="SEARCH")))
            if not uids:
                return {}
            return parse_fetch_response(conn.run("UID", "FETCH", _uid_set(uids), _META, want="FETCH"), False, True)

        return lazy, self._call(account.name, work)

    def _clear_expunged(self, account: _Account, lazy: str, uids: Iterable[int]) -> None:
        targets = sorted(uids)
        if not targets:
            return

        def work(conn: _Connection) -> None:
            conn.select(lazy, readonly=False)
            conn.run("UID", "STORE", _uid_set(targets), "+FLAGS.SILENT", "(\\Deleted)")
            conn.run("UID", "EXPUNGE", _uid_set(targets))

        self._call(account.name, work)

    def _take_expunged(self, account: _Account, mailbox: str, removed: list[MessageRecord]) -> None:
        """A client expunged `removed` from `mailbox` over Dovecot's IMAP: hand Dovecot's lazy copies to the
        removal listeners (matched by Message-ID, else in order), then clear them."""
        if self.access.expunged_prefix is None or not removed:
            return
        lazy, copies = self._expunged_copies(account, mailbox)
        if not copies:
            return
        unmatched = sorted(copies)
        source: dict[int, int] = {}  # the removed record's UID -> the UID of its copy
        for record in removed:
            match = next((u for u in unmatched if record.message_id is not None and
                          _fetched_message_id(copies[u]) == record.message_id), None)
            if match is None and unmatched and record.message_id is None:
                match = unmatched[0]
            if match is not None:
                unmatched.remove(match)
                source[record.uid] = match
        kept = [r for r in removed if r.uid in source]
        if kept and self._removal_listeners:
            def read(uid: int) -> bytes:
                if uid not in source:
                    raise NoSuchMessage(f"UID {uid} is not being removed")
                return self.fetch_raw(account.name, lazy, source[uid])

            self._tell_removal(MessagesRemoving(account.name, mailbox, tuple(kept), None, "expunge", read))
        self._clear_expunged(account, lazy, copies)

    def _box(self, user: str, name: str, origin: object | None = None) -> tuple[_Account, _Box]:
        """The mailbox, synced with Dovecot; NoSuchMailbox when Dovecot has none of that name."""
        account = self._account(user)
        key = _box_name(name)
        box = account.boxes.get(key)
        if box is None:
            self._sync_account(account, origin)
            box = account.boxes.get(key)
            if box is None:
                raise NoSuchMailbox(f"No mailbox {name}")
            return account, box
        try:
            self._sync_box(account, box, origin)
        except _Refused as exc:
            if exc.code != "NONEXISTENT":
                raise
            self._sync_account(account, origin)
            raise NoSuchMailbox(f"No mailbox {name}") from None
        return account, box

    @staticmethod
    def _info(box: _Box) -> MailboxInfo:
        return MailboxInfo(box.name, box.uidvalidity, box.uidnext, box.highestmodseq, len(box.records), box.unseen,
                           box.special_use, box.subscribed)

    # -- mailboxes --------------------------------------------------------------------------------------
    def list_mailboxes(self, user: str) -> list[MailboxInfo]:
        account = self._account(user)
        self._sync_account(account, None)
        return [self._info(account.boxes[n]) for n in sorted(account.boxes, key=sort_key)]

    def mailbox(self, user: str, name: str) -> MailboxInfo:
        return self._info(self._box(user, name)[1])

    def create_mailbox(self, user: str, name: str, special_use: str | None = None,
                       origin: object | None = None) -> MailboxInfo:
        account = self._account(user)
        key = canonical(name)
        if special_use is not None and special_use not in _SPECIAL:
            raise StoreError(f"Unknown special-use attribute {special_use}")
        self._sync_account(account, origin)
        if key in account.boxes:
            raise MailboxExists(f"Mailbox {key} already exists")
        self._create_parents(account, key)
        try:
            self._call(account.name, lambda conn: conn.run("CREATE", _quote(key)))
        except _Refused as exc:
            if exc.code == "ALREADYEXISTS":
                raise MailboxExists(f"Mailbox {key} already exists") from None
            raise
        self._call(account.name, lambda conn: conn.run("SUBSCRIBE", _quote(key)))  # as the other stores do
        if special_use:
            self._special[(account.name, key)] = special_use
        self._sync_account(account, origin)
        return self._info(account.boxes[key])

    def _create_parents(self, account: _Account, key: str) -> None:
        """Missing parents made real mailboxes (subscribed), as the other stores make them: Dovecot's Maildir++
        would leave them \\Noselect."""
        for parent in parents(key):
            if parent not in account.boxes:
                with contextlib.suppress(_Refused):
                    self._call(account.name, lambda conn, p=parent: conn.run("CREATE", _quote(p)))
                    self._call(account.name, lambda conn, p=parent: conn.run("SUBSCRIBE", _quote(p)))

    def delete_mailbox(self, user: str, name: str, origin: object | None = None) -> None:
        account, box = self._box(user, name)
        if box.name == "INBOX":
            raise StoreError("INBOX cannot be deleted")
        self._announce_removal(account, box, list(box.records.values()), origin, "mailbox-deleted")
        self._call(account.name, lambda conn: self._unselect_then(conn, "DELETE", _quote(box.name)))
        self._special.pop((account.name, box.name), None)
        self._sync_account(account, origin)

    def rename_mailbox(self, user: str, old: str, new: str, origin: object | None = None) -> None:
        """RENAME, with the other stores' rules: missing parents made, subscriptions follow, one
        `MailboxRenamed` per mailbox of the subtree; INBOX (which Dovecot's Maildir++ cannot rename) is emptied
        into the new mailbox by CREATE and MOVE, as RFC 9051 6.3.6 describes the result."""
        account = self._account(user)
        self._sync_account(account, origin)
        box = account.boxes.get(_box_name(old))
        if box is None:
            raise NoSuchMailbox(f"No mailbox {old}")
        target = canonical(new)
        if target in account.boxes:
            raise MailboxExists(f"Mailbox {target} already exists")
        if box.name == "INBOX":
            self.create_mailbox(account.name, target, origin=origin)
            if box.records:
                self.move(account.name, "INBOX", list(box.records), target, origin)
            return
        source = box.name
        subtree = [n for n in account.boxes if n == source or n.startswith(source + "/")]
        self._create_parents(account, target)
        try:
            self._call(account.name, lambda conn: self._unselect_then(conn, "RENAME", _quote(source), _quote(target)))
        except _Refused as exc:
            if exc.code == "ALREADYEXISTS":
                raise MailboxExists(f"Mailbox {target} already exists") from None
            raise
        for name in sorted(subtree, key=len):
            moved = account.boxes.pop(name)
            new_name = target + name[len(source):]
            for record in moved.records.values():
                account.index.remove(record.message_id, name, record.uid)
                account.index.add(record.message_id, new_name, record.uid)
            moved.name = new_name
            account.boxes[new_name] = moved
            if moved.subscribed:
                with contextlib.suppress(_Refused):
                    self._call(account.name, lambda conn, a=name: conn.run("UNSUBSCRIBE", _quote(a)))
                self._call(account.name, lambda conn, b=new_name: conn.run("SUBSCRIBE", _quote(b)))
            self._bus.publish(MailboxRenamed(account.name, name, new_name, origin))
        self._sync_account(account, origin)

    @staticmethod
    def _unselect_then(conn: _Connection, command: str, *args: str) -> list[Any]:
        if conn.selected is not None:
            conn.imap.unselect()
            conn.selected = None
        return conn.run(command, *args)

    def set_subscribed(self, user: str, name: str, subscribed: bool) -> None:
        account, box = self._box(user, name)
        self._call(account.name, lambda conn: conn.run("SUBSCRIBE" if subscribed else "UNSUBSCRIBE", _quote(box.name)))
        box.subscribed = subscribed

    def subscriptions(self, user: str) -> list[str]:
        account = self._account(user)
        self._sync_account(account, None)
        return [n for n in sorted(account.boxes, key=sort_key) if account.boxes[n].subscribed]

    # -- messages ---------------------------------------------------------------------------------------
    def append(self, user: str, mailbox: str, raw: bytes, flags: Iterable[str] = (),
               internaldate: datetime | None = None, origin: object | None = None) -> MessageRecord:
        if not isinstance(raw, bytes | bytearray):
            raise StoreError("A message must be bytes")
        account, box = self._box(user, mailbox)
        wanted = " ".join(sorted(normalize_flags(flags)))
        when = imaplib.Time2Internaldate(internaldate) if internaldate is not None else None

        def work(conn: _Connection) -> str | None:
            conn.imap.untagged_responses.clear()
            try:
                typ, data = conn.imap.append(_quote(box.name), f"({wanted})" if wanted else None, when, raw)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                raise StoreError(f"Dovecot refused the message: {exc}") from None
            if typ != "OK":
                raise StoreError(f"Dovecot refused the message: {data!r}")
            conn.tagged = data
            return conn.response_code("APPENDUID")

        appended = self._call(account.name, work)
        self._sync_box(account, box, origin)
        uid = int(appended.split()[1]) if appended else max(box.records, default=0)
        try:
            return box.records[uid]
        except KeyError:
            raise NoSuchMessage(f"The appended message is no longer in {box.name}") from None

    def deliver(self, user: str, raw: bytes, mailbox: str = "INBOX", origin: object | None = None
                ) -> MessageRecord:
        """Into INBOX over LMTP, as an MTA hands mail to Dovecot (other mailboxes: APPEND as a master user)."""
        if mailbox.upper() != "INBOX" or _RETURN_PATH.match(raw) is None:
            # LMTP is an MTA's hand-over: it writes the Return-Path final delivery writes. Bytes without one (a
            # tool's, a test's) go in by APPEND, so that the store keeps them exactly
            return self.append(user, mailbox, raw, (), None, origin)
        account, box = self._box(user, "INBOX")
        before = set(box.records)
        self._lmtp_send(account.name, raw)
        self._sync_box(account, box, origin)
        wanted = extract_message_id(raw)
        new = [r for uid, r in box.records.items() if uid not in before]
        if not new:
            raise StoreError(f"Dovecot accepted the message for {user} but it is not in INBOX")
        same = [r for r in new if r.message_id == wanted]
        return (same or new)[-1]

    def _lmtp_send(self, user: str, raw: bytes) -> None:
        """One LMTP transaction. The Return-Path the lab's delivery put on top becomes LMTP's MAIL FROM, and is
        taken off: Dovecot writes the Return-Path of MAIL FROM itself, so the stored bytes are the lab's."""
        sender = ""
        match = _RETURN_PATH.match(raw)
        if match is not None:
            sender = match.group(1).decode("utf-8", "replace")
            raw = raw[match.end():]
        options = ["SMTPUTF8"] if not (sender + user).isascii() else []
        for attempt in (1, 2):
            try:
                if self._lmtp is None:
                    self._lmtp = smtplib.LMTP(self.access.host, self.access.lmtp_port, local_hostname="localhost",
                                              timeout=self.access.timeout)
                    self._lmtp.ehlo("localhost")
                refused = self._lmtp.sendmail(sender, [user], raw, mail_options=options)
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = exc.recipients.get(user, (550, b"refused"))
                raise StoreError(f"Dovecot's LMTP refused {user}: {code} {text.decode(errors='replace')}") from None
            except smtplib.SMTPResponseException as exc:
                raise StoreError(f"Dovecot's LMTP refused the message: {exc.smtp_code} "
                                 f"{exc.smtp_error.decode(errors='replace')}") from None
            except (OSError, smtplib.SMTPException) as exc:
                self._close_lmtp()
                if attempt == 2:
                    raise StoreError(f"Dovecot's LMTP at {self.access.host}:{self.access.lmtp_port}: {exc}") from None
                continue
            if refused:
                code, text = refused[user]
                raise StoreError(f"Dovecot's LMTP refused {user}: {code} {text.decode(errors='replace')}")
            return

    def _close_lmtp(self) -> None:
        lmtp, self._lmtp = self._lmtp, None
        if lmtp is not None:
            with contextlib.suppress(Exception):
                lmtp.quit()
            with contextlib.suppress(Exception):
                lmtp.close()

    def messages(self, user: str, mailbox: str) -> list[MessageRecord]:
        return list(self._box(user, mailbox)[1].records.values())

    def get(self, user: str, mailbox: str, uid: int) -> MessageRecord:
        record = self._box(user, mailbox)[1].records.get(uid)
        if record is None:
            raise NoSuchMessage(f"No message with UID {uid} in {mailbox}")
        return record

    def fetch_raw(self, user: str, mailbox: str, uid: int) -> bytes:
        account = self._account(user)
        name = _box_name(mailbox)

        def work(conn: _Connection) -> dict[int, Any]:
            conn.select(name, readonly=True)
            return parse_fetch_response(conn.run("UID", "FETCH", str(uid), "(UID BODY.PEEK[])", want="FETCH"),
                                        False, True)

        try:
            data = self._call(account.name, work).get(uid, {})
        except _Refused as exc:
            if exc.code == "NONEXISTENT":
                raise NoSuchMailbox(f"No mailbox {mailbox}") from None
            raise
        raw = data.get(b"BODY[]")
        if raw is None:
            raise NoSuchMessage(f"No message with UID {uid} in {mailbox}")
        return bytes(raw)

    def find_by_message_id(self, user: str, message_id: str) -> list[MessageLocation]:
        account = self._account(user)
        self._sync_account(account, None)
        return account.index.find(message_id)

    def store_flags(self, user: str, mailbox: str, uids: Sequence[int], flags: Iterable[str],
                    mode: FlagMode = "set", unchanged_since: int | None = None,
                    origin: object | None = None) -> FlagUpdate:
        account, box = self._box(user, mailbox)
        targets = sorted(u for u in set(uids) if u in box.records)
        wanted = sorted(normalize_flags(flags))
        if not targets:
            return FlagUpdate()
        before = {u: box.records[u] for u in targets}
        item = {"set": "FLAGS.SILENT", "add": "+FLAGS.SILENT", "remove": "-FLAGS.SILENT"}[mode]
        modifier = f"(UNCHANGEDSINCE {unchanged_since}) " if unchanged_since is not None else ""

        def work(conn: _Connection) -> str | None:
            conn.select(box.name, readonly=False)
            conn.run("UID", "STORE", _uid_set(targets), f"{modifier}{item}", f"({' '.join(wanted)})")
            return conn.response_code("MODIFIED")

        modified = self._call(account.name, work)
        failed = tuple(_expand(modified)) if modified else ()
        self._sync_box(account, box, origin)
        changed = tuple(box.records[u] for u in targets if u in box.records and box.records[u] != before[u])
        unchanged = tuple(box.records[u] for u in targets
                          if u in box.records and box.records[u] == before[u] and u not in failed)
        return FlagUpdate(changed, unchanged, failed)

    def copy(self, user: str, mailbox: str, uids: Sequence[int], dest: str,
             origin: object | None = None) -> list[tuple[int, int]]:
        return self._transfer("COPY", user, mailbox, uids, dest, origin)

    def move(self, user: str, mailbox: str, uids: Sequence[int], dest: str,
             origin: object | None = None) -> list[tuple[int, int]]:
        return self._transfer("MOVE", user, mailbox, uids, dest, origin)

    def _transfer(self, command: str, user: str, mailbox: str, uids: Sequence[int], dest: str,
                  origin: object | None) -> list[tuple[int, int]]:
        account, box = self._box(user, mailbox)
        _account, target = self._box(user, dest)
        sources = sorted(u for u in set(uids) if u in box.records)
        if not sources:
            return []

        def work(conn: _Connection) -> str | None:
            conn.select(box.name, readonly=command == "COPY")
            conn.run("UID", command, _uid_set(sources), _quote(target.name))
            return conn.response_code("COPYUID")

        copyuid = self._call(account.name, work)
        self._sync_box(account, target, origin)
        if command == "MOVE":
            self._sync_box(account, box, origin)
        if not copyuid:
            return []
        _validity, src, dst = copyuid.split()
        return sorted(zip(_expand(src), _expand(dst), strict=False))

    def expunge(self, user: str, mailbox: str, uids: Sequence[int] | None = None,
                origin: object | None = None) -> list[int]:
        account, box = self._box(user, mailbox)
        if uids is None:
            targets = [u for u, r in box.records.items() if "\\Deleted" in r.flags]
        else:
            targets = sorted(u for u in set(uids) if u in box.records)
        if not targets:
            return []
        self._announce_removal(account, box, [box.records[u] for u in targets], origin, "expunge")

        def work(conn: _Connection) -> None:
            conn.select(box.name, readonly=False)
            conn.run("UID", "STORE", _uid_set(targets), "+FLAGS.SILENT", "(\\Deleted)")
            conn.run("UID", "EXPUNGE", _uid_set(targets))

        self._call(account.name, work)
        self._sync_box(account, box, origin)
        if self.access.expunged_prefix is not None:  # told above, before the bytes went: Dovecot's copies go
            lazy, copies = self._expunged_copies(account, box.name)
            self._clear_expunged(account, lazy, copies)
        return [u for u in targets if u not in box.records]

    def _announce_removal(self, account: _Account, box: _Box, records: list[MessageRecord], origin: object | None,
                          cause: Any) -> None:
        if not self._removal_listeners or not records:
            return
        by_uid = {r.uid: r for r in records}

        def read(uid: int) -> bytes:
            if uid not in by_uid:
                raise NoSuchMessage(f"UID {uid} is not being removed")
            return self.fetch_raw(account.name, box.name, uid)

        self._tell_removal(MessagesRemoving(account.name, box.name, tuple(sorted(records, key=lambda r: r.uid)),
                                            origin, cause, read))

    def _tell_removal(self, removing: MessagesRemoving) -> None:
        for listener in tuple(self._removal_listeners):
            try:
                listener(removing)
            except Exception:  # noqa: BLE001 - a listener must not stop the removal
                log.exception("store removal listener %r failed on %s/%s", listener, removing.user,
                              removing.mailbox)

    def claim_recent(self, user: str, mailbox: str, uids: Iterable[int]) -> set[int]:
        return set()  # \Recent is Dovecot's to give: its IMAP sessions, not this store, hand it out

    # -- write-ahead records ----------------------------------------------------------------------------
    def begin_operation(self, op_id: str, record: Mapping[str, Any]) -> None:
        self._operations.begin(op_id, record)

    def end_operation(self, op_id: str) -> None:
        self._operations.end(op_id)

    def unfinished_operations(self) -> dict[str, dict[str, Any]]:
        return self._operations.unfinished()

    # -- watching for other clients' changes -------------------------------------------------------------
    def watch(self, user: str) -> None:
        """Keep one NOTIFY connection for `user` in the running loop, so a change a client makes over Dovecot's
        IMAP is published within Dovecot's notification delay (idempotent; stopped by `close`)."""
        key = self._account(user).name
        task = self._watchers.get(key)
        if task is not None and not task.done():
            return
        self._watchers[key] = asyncio.get_running_loop().create_task(self._watch(key), name=f"dovecot watch {key}")

    async def _watch(self, user: str) -> None:
        """NOTIFY SET for the user's personal mailboxes; any untagged line means "look again" (`_sync_account`,
        on the loop's thread, coalesced while one is pending)."""
        loop = asyncio.get_running_loop()
        pending = False

        def look() -> None:
            nonlocal pending
            pending = False
            account = self._accounts.get(user)
            if account is not None and not self._closed:
                try:
                    self._sync_account(account, None)
                except StoreError as exc:
                    log.warning("dovecot sync of %s failed: %s", user, exc)

        while not self._closed:
            writer = None
            try:
                reader, writer = await asyncio.open_connection(self.access.host, self.access.imap_port)
                await reader.readline()
                login = self.access.login_as(user).replace("\\", "\\\\").replace('"', '\\"')
                password = self.access.master_password.replace("\\", "\\\\").replace('"', '\\"')
                writer.write(f'w1 LOGIN "{login}" "{password}"\r\n'
                             "w2 NOTIFY SET (personal (MessageNew MessageExpunge FlagChange MailboxName "
                             "SubscriptionChange))\r\n".encode())
                await writer.drain()
                while not self._closed:
                    line = await reader.readline()
                    if not line:
                        break
                    if line.startswith((b"w1 NO", b"w1 BAD", b"w2 NO", b"w2 BAD")):
                        log.warning("dovecot watch of %s refused: %r", user, line[:200])
                        return
                    literal = re.search(rb"\{(\d+)\}\r\n$", line)
                    if literal:
                        await reader.readexactly(int(literal.group(1)))
                    if line.startswith(b"* ") and not line.startswith((b"* OK", b"* CAPABILITY")) and not pending:
                        pending = True
                        loop.call_soon(look)
            except (OSError, asyncio.IncompleteReadError) as exc:
                log.debug("dovecot watch of %s: %s", user, exc)
            finally:
                if writer is not None:
                    writer.close()
            if not self._closed:
                await asyncio.sleep(0.5)  # Dovecot restarting: try again, without spinning

    def close(self) -> None:
        self._closed = True
        for task in self._watchers.values():
            task.cancel()
        self._watchers.clear()
        while self._connections:
            _user, conn = self._connections.popitem()
            conn.close()
        self._close_lmtp()

