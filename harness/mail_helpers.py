"""What a test of an application's mail asks of a lab: its messages, parsed, found by a few filters, waited for.

Why one module for `Lab` and the `mail_lab` fixture: both answer the same questions (`messages`, `message`,
`find`, `latest`, `wait_for`, `clear`) the same way; the Lab mixes `MailHelpers` in and runs them in its loop,
the fixture (a lab in a thread of its own) calls them there. Everything reads the stores through their public
API and hears of new mail through their subscription, so a wait returns the moment a message is stored.

A message is an `email.message.EmailMessage` parsed with `email.policy.default` (a `LabMessage`, which adds
`.raw`, the bytes as stored, and where it lies: `.user`, `.folder`, `.uid`, `.source`, `.arrived`). The lab's
domains and the capture (capture mode) are searched alike; `source` names which one ("corp.example",
"capture"). An address the capture took mail for has its capture mailbox even when its domain is one of the
lab's: `messages("bob@corp.example")` reads both, in arrival order.

The filters of `find` and `wait_for`, all optional and combined with AND:
- `to`: the address whose mailbox holds the message (exact, any case): the envelope recipient, so a Bcc
  recipient counts and the To header need not name it;
- `subject`, `text`: a string is looked for as a case-insensitive substring; a compiled `re.Pattern` is
  searched as given. `text` is the body text: the text/plain part, or the text of the HTML part when there
  is no plain one (as the HTTP API's search reads it);
- `since`: a timezone-aware datetime; the message arrived in its folder at or after it (the lab notes
  arrival times to the microsecond; mail a store kept from an earlier run has its whole-second date);
- `folder`: "INBOX" unless told (the Sent copies of the lab's users would otherwise match too).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from recall_lab.fake_servers.store.base import (
    MailboxDeleted,
    MailboxRenamed,
    MailStore,
    MessageAppended,
    MessageRecord,
    MessagesExpunged,
    NoSuchMailbox,
    StoreError,
    StoreEvent,
)

__all__ = ["ArrivalLog", "LabMessage", "MailFilter", "MailHelpers"]

#: The name of the capture among the sources of mail (the lab's domains are named by their domain).
CAPTURE = "capture"

Text = str | re.Pattern[str]


class LabMessage(EmailMessage):
    """A stored message, parsed (policy.default), with its bytes and where it lies."""

    raw: bytes
    user: str
    folder: str
    uid: int
    source: str
    arrived: datetime
    message_id: str | None

    def __repr__(self) -> str:
        if not hasattr(self, "raw"):  # a part of a message (the parser makes parts of the same class)
            return f"<LabMessage part {self.get_content_type()}>"
        return (f"<LabMessage {self.message_id or '(no Message-ID)'} {self.get('Subject', '')!r} "
                f"{self.user} {self.source}/{self.folder} uid={self.uid}>")


_PARSER = BytesParser(LabMessage, policy=email_policy.default)


def parse(raw: bytes, *, user: str, folder: str, record: MessageRecord, source: str,
          arrived: datetime | None = None) -> LabMessage:
    msg = _PARSER.parsebytes(raw)
    assert isinstance(msg, LabMessage)
    msg.raw = raw
    msg.user, msg.folder, msg.uid, msg.source = user, folder, record.uid, source
    msg.arrived = arrived or record.internaldate
    msg.message_id = record.message_id
    return msg


def _check_text(name: str, value: Any) -> Text | None:
    if value is None or isinstance(value, str | re.Pattern):
        return value
    raise TypeError(f"{name} must be a string or a compiled re.Pattern, not {type(value).__name__}")


def _matches(wanted: Text | None, text: str) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return wanted.casefold() in text.casefold()
    return wanted.search(text) is not None


@dataclass(frozen=True)
class MailFilter:
    """The filters of `find` and `wait_for` (see the module docstring), checked when made."""

    to: str | None = None
    subject: Text | None = None
    text: Text | None = None
    since: datetime | None = None
    folder: str = "INBOX"

    def __post_init__(self) -> None:
        if self.to is not None:
            if not isinstance(self.to, str) or "@" not in self.to:
                raise ValueError(f"to must be an address, not {self.to!r}")
            object.__setattr__(self, "to", self.to.strip().lower())
        _check_text("subject", self.subject)
        _check_text("text", self.text)
        if self.since is not None:
            if not isinstance(self.since, datetime):
                raise TypeError(f"since must be a datetime, not {type(self.since).__name__}")
            if self.since.tzinfo is None:
                raise ValueError("since must be timezone-aware, e.g. datetime.now(UTC)")
        if not isinstance(self.folder, str) or not self.folder:
            raise ValueError("folder must be a folder name")

    def wants(self, user: str, folder: str) -> bool:
        """Whether a message of this user and folder may match (before it is read)."""
        return (self.to is None or user == self.to) and _same_folder(folder, self.folder)

    def matches(self, msg: LabMessage) -> bool:
        if not self.wants(msg.user, msg.folder):
            return False
        if self.since is not None and msg.arrived < self.since:
            return False
        if self.subject is not None and not _matches(self.subject, str(msg.get("Subject", "") or "")):
            return False
        if self.text is not None:
            from recall_lab.harness.web.messages import read_message

            if not _matches(self.text, read_message(msg.raw).text):
                return False
        return True

    def describe(self) -> str:
        parts = [f"{name}={getattr(self, name)!r}" for name in ("to", "subject", "text", "since")
                 if getattr(self, name) is not None]
        where = f" in {self.folder}"
        return (" with " + ", ".join(parts) if parts else "") + where


def _same_folder(a: str, b: str) -> bool:
    return a == b or (a.upper() == "INBOX" and b.upper() == "INBOX")


class ArrivalLog:
    """When each message reached its folder, to the microsecond (the stores keep whole seconds, as IMAP's
    INTERNALDATE does, which cannot tell "before" from "after" within one second)."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._when: dict[tuple[str, str, str, int], datetime] = {}
        self._listeners: list[tuple[MailStore, Callable[[StoreEvent], None]]] = []

    def watch(self, source: str, store: MailStore) -> None:
        def listener(event: StoreEvent) -> None:
            self._on_event(source, event)

        store.subscribe(listener)
        self._listeners.append((store, listener))

    def close(self) -> None:
        for store, listener in self._listeners:
            try:
                store.unsubscribe(listener)
            except Exception:  # noqa: BLE001, S112 - a store already closed has no listeners to drop
                continue
        self._listeners.clear()
        self._when.clear()

    def get(self, source: str, user: str, folder: str, uid: int) -> datetime | None:
        return self._when.get((source, user, folder, uid))

    def _on_event(self, source: str, event: StoreEvent) -> None:
        if isinstance(event, MessageAppended):
            self._when[(source, event.user, event.mailbox, event.record.uid)] = self._clock()
        elif isinstance(event, MessagesExpunged):
            for uid in event.uids:
                self._when.pop((source, event.user, event.mailbox, uid), None)
        elif isinstance(event, MailboxDeleted | MailboxRenamed):
            moved = [key for key in self._when if key[:3] == (source, event.user, event.mailbox)]
            for key in moved:
                when = self._when.pop(key)
                if isinstance(event, MailboxRenamed):
                    self._when[(source, key[1], event.new_name, key[3])] = when


class MailHelpers:
    """The helpers, mixed into `Lab` (loop thread only; `wait_for` is a coroutine there). A subclass provides
    `domains`, `store(domain)`, and sets `_capture` (the CaptureServer, in capture mode) and `_arrivals`."""

    _capture: Any = None
    _arrivals: ArrivalLog | None = None
    domains: list[str]

    def store(self, domain: str) -> MailStore:  # pragma: no cover - the Lab's
        raise NotImplementedError

    @property
    def capture(self) -> Any:
        """The capture (`.smtp`, `.imap`: host and port); RuntimeError when capture mode is off."""
        if self._capture is None:
            raise RuntimeError("capture mode is off in this lab: turn it on with [capture] in the lab config, "
                               "`recall-lab serve --capture` or @pytest.mark.mail_lab(capture=True)")
        return self._capture

    # -- where mail lies ------------------------------------------------------------------------------
    def _all_sources(self) -> list[tuple[str, MailStore]]:
        sources = [(domain, self.store(domain)) for domain in self.domains]
        if self._capture is not None:
            sources.append((CAPTURE, self._capture.store))
        return sources

    def _sources(self, user: str) -> list[tuple[str, MailStore]]:
        """The stores that hold a mailbox of `user`; KeyError when the lab cannot have mail for it."""
        address = user.strip().lower()
        domain = address.rpartition("@")[2]
        found = [(name, store) for name, store in self._all_sources()
                 if (name == domain or name == CAPTURE) and address in store.users()]
        if not found and self._capture is None:
            raise KeyError(f"{user} is not a user of this lab")
        return found

    def _check_to(self, flt: MailFilter) -> None:
        if flt.to is not None and self._capture is None and flt.to.rpartition("@")[2] not in self.domains:
            raise KeyError(f"{flt.to} is not a user of this lab (and capture mode is off)")

    def _read(self, source: str, store: MailStore, user: str, folder: str, record: MessageRecord
              ) -> LabMessage | None:
        try:
            raw = store.fetch_raw(user, folder, record.uid)
        except StoreError:  # removed since it was listed
            return None
        arrived = self._arrivals.get(source, user, folder, record.uid) if self._arrivals is not None else None
        return parse(raw, user=user, folder=folder, record=record, source=source, arrived=arrived)

    def _folder_messages(self, source: str, store: MailStore, user: str, folder: str) -> list[LabMessage]:
        name = store.mailbox(user, folder).name  # NoSuchMailbox when absent
        out = [self._read(source, store, user, name, record) for record in store.messages(user, name)]
        return [m for m in out if m is not None]

    # -- the helpers ----------------------------------------------------------------------------------
    def messages(self, user: str, folder: str = "INBOX") -> list[LabMessage]:
        """The user's messages in `folder`, oldest first (the lab's domain and the capture alike)."""
        out: list[LabMessage] = []
        sources = self._sources(user)
        missing = 0
        for source, store in sources:
            try:
                out += self._folder_messages(source, store, user.strip().lower(), folder)
            except NoSuchMailbox:
                missing += 1
        if sources and missing == len(sources):
            raise LookupError(f"{user} has no folder {folder!r}")
        return sorted(out, key=lambda m: m.arrived)

    def message(self, user: str, message_id: str) -> LabMessage:
        """The user's message with this Message-ID (INBOX first, then any folder); LookupError when none."""
        address = user.strip().lower()
        for source, store in self._sources(user):
            locations = sorted(store.find_by_message_id(address, message_id),
                               key=lambda loc: (loc.mailbox.upper() != "INBOX", loc.mailbox, loc.uid))
            for loc in locations:
                try:
                    record = store.get(address, loc.mailbox, loc.uid)
                except StoreError:
                    continue
                msg = self._read(source, store, address, loc.mailbox, record)
                if msg is not None:
                    return msg
        raise LookupError(f"{user} has no message {message_id}")

    def latest(self, user: str, folder: str = "INBOX") -> LabMessage:
        """The user's newest message in `folder`; LookupError when it is empty."""
        found = self.messages(user, folder)
        if not found:
            raise LookupError(f"{user} has no message in {folder}")
        return found[-1]

    def find(self, *, to: str | None = None, subject: Text | None = None, text: Text | None = None,
             since: datetime | None = None, folder: str = "INBOX") -> list[LabMessage]:
        """Every message matching the filters (module docstring), over every user, oldest first."""
        flt = MailFilter(to=to, subject=subject, text=text, since=since, folder=folder)
        self._check_to(flt)
        return self._find(flt)

    def _find(self, flt: MailFilter) -> list[LabMessage]:
        out: list[LabMessage] = []
        for source, store in self._all_sources():
            users = [flt.to] if flt.to is not None else store.users()
            for user in users:
                try:
                    out += [m for m in self._folder_messages(source, store, user, flt.folder) if flt.matches(m)]
                except StoreError:  # no such user or folder there
                    continue
        return sorted(out, key=lambda m: m.arrived)

    async def wait_for(self, *, to: str | None = None, subject: Text | None = None, text: Text | None = None,
                       since: datetime | None = None, folder: str = "INBOX", timeout: float = 5.0) -> LabMessage:
        """The first (oldest) message matching the filters, as soon as one is stored: re-checked on every
        store's append event, never by polling; TimeoutError after `timeout` seconds."""
        flt = MailFilter(to=to, subject=subject, text=text, since=since, folder=folder)
        self._check_to(flt)
        pending: list[tuple[str, MailStore, MessageAppended]] = []
        woke = asyncio.Event()
        subscribed: list[tuple[MailStore, Callable[[StoreEvent], None]]] = []
        for source, store in self._all_sources():
            def listener(event: StoreEvent, source: str = source, store: MailStore = store) -> None:
                if isinstance(event, MessageAppended) and flt.wants(event.user, event.mailbox):
                    pending.append((source, store, event))
                    woke.set()

            store.subscribe(listener)
            subscribed.append((store, listener))
        try:
            # listening already: a message stored from here on is heard, one stored before is found now
            found = self._find(flt)
            if found:
                return found[0]
            async with asyncio.timeout(timeout):
                while True:
                    await woke.wait()
                    woke.clear()
                    batch, pending[:] = list(pending), []
                    for source, store, event in batch:
                        msg = self._read(source, store, event.user, event.mailbox, event.record)
                        if msg is not None and flt.matches(msg):
                            return msg
        except TimeoutError:
            raise TimeoutError(f"no message{flt.describe()} arrived within {timeout:g} s") from None
        finally:
            for store, listener in subscribed:
                store.unsubscribe(listener)

    def clear(self, user: str | None = None) -> int:
        """Delete every message of `user` (every folder), or of every user of the lab and the capture;
        returns how many were deleted. Mailboxes and accounts stay."""
        targets: list[tuple[MailStore, str]] = []
        if user is None:
            targets = [(store, who) for _source, store in self._all_sources() for who in store.users()]
        else:
            targets = [(store, user.strip().lower()) for _source, store in self._sources(user)]
        removed = 0
        for store, who in targets:
            try:
                folders = [info.name for info in store.list_mailboxes(who)]
            except StoreError:
                continue
            for folder in folders:
                try:
                    uids = [record.uid for record in store.messages(who, folder)]
                    removed += len(store.expunge(who, folder, uids)) if uids else 0
                except StoreError:
                    continue
        return removed
