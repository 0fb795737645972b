"""NOTIFY (RFC 5465): one connection told of changes in every mailbox it names, not only the selected one.

Why: a desktop client that mirrors many folders otherwise keeps one IDLE connection per folder; with NOTIFY one
connection hears them all (a STATUS line per changed mailbox, LIST lines for created, deleted, renamed and
(un)subscribed mailboxes), while the selected mailbox still gets its EXISTS / EXPUNGE / FETCH lines, now at any
time (SELECTED) and with the FETCH items the client asked for new messages (`MessageNew (fetch-att ...)`).

What is supported: the filters SELECTED, SELECTED-DELAYED, INBOXES (INBOX: no other mailbox receives mail
here), PERSONAL, SUBSCRIBED, SUBTREE and MAILBOXES; the events MessageNew, MessageExpunge, FlagChange,
MailboxName and SubscriptionChange. AnnotationChange and the METADATA events get `NO [BADEVENT (...)]`.

How it is sent: a change to another mailbox marks that mailbox; its STATUS is read from the store when the
notifications go out (so a burst of deliveries costs one line), with the items its events call for (as Dovecot
answers: MessageNew -> MESSAGES UIDNEXT UIDVALIDITY, MessageExpunge -> MESSAGES, FlagChange -> UIDVALIDITY
HIGHESTMODSEQ). Notifications go out before every tagged reply, during IDLE, and between commands (the session
asks its adapter to `wake` it), never inside another response. A client that lets more than
`MAX_PENDING` notifications pile up gets `* OK [NOTIFICATIONOVERFLOW]` and NOTIFY is off (RFC 5465 5.8).

The changes a session makes itself are not reported back to it as STATUS or LIST lines: it knows them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..store.base import (
    SEPARATOR,
    FlagsChanged,
    MailboxCreated,
    MailboxDeleted,
    MailboxRenamed,
    MessageAppended,
    MessagesExpunged,
    NoSuchMailbox,
)
from .errors import CommandFailed, ParseError
from .fetch_items import FetchItem, parse_item
from .lexer import Lexer
from .mime.tree import run_steps
from .selected import MODSEQ_SHIFT
from .state import SessionCore

#: The events this server reports, in the order BADEVENT lists them.
SUPPORTED_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange")
#: Events RFC 5465 and its extensions define that this server does not report.
_UNSUPPORTED_EVENTS = ("AnnotationChange", "MailboxMetadataChange", "ServerMetadataChange")
_EVENTS = {e.upper(): e for e in SUPPORTED_EVENTS + _UNSUPPORTED_EVENTS}
_MESSAGE_EVENTS = frozenset({"MessageNew", "MessageExpunge", "FlagChange"})
_FILTERS = frozenset({"SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE",
                      "MAILBOXES"})

#: Bounds on what one NOTIFY command may ask for (a client's command must not make us keep without end).
MAX_GROUPS = 64
MAX_NAMES = 1000
MAX_FETCH_ATTS = 32
#: Notifications (mailboxes awaiting STATUS plus LIST lines) one session may have waiting before overflow.
MAX_PENDING = 10000

#: STATUS items per event, in the order they are written.
_STATUS_ORDER = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "HIGHESTMODSEQ")
_STATUS_FOR = {"MessageNew": ("MESSAGES", "UIDNEXT", "UIDVALIDITY"), "MessageExpunge": ("MESSAGES",),
               "FlagChange": ("UIDVALIDITY", "HIGHESTMODSEQ")}


@dataclass(frozen=True)
class EventGroup:
    """One `(filter events)` group: which mailboxes, and what to report about them."""

    filter: str  # one of _FILTERS
    names: tuple[str, ...] = ()  # SUBTREE / MAILBOXES only
    events: frozenset[str] = frozenset()
    fetch_atts: tuple[FetchItem, ...] = ()  # MessageNew's, SELECTED / SELECTED-DELAYED only


@dataclass(frozen=True)
class NotifySpec:
    """A parsed `NOTIFY SET`: the STATUS indicator and the groups in the client's order."""

    status: bool
    groups: tuple[EventGroup, ...] = field(default=())

    def selected_group(self) -> EventGroup | None:
        for group in self.groups:
            if group.filter in ("SELECTED", "SELECTED-DELAYED"):
                return group
        return None

    def events_for(self, name: str, subscribed: Callable[[], set[str]]) -> frozenset[str]:
        """The events wanted for mailbox `name` when it is not the selected one: the first group whose filter
        names it decides (`subscribed()` is asked only when a SUBSCRIBED filter comes up)."""
        for group in self.groups:
            if _matches(group, name, subscribed):
                return group.events
        return frozenset()


def _matches(group: EventGroup, name: str, subscribed: Callable[[], set[str]]) -> bool:
    kind = group.filter
    if kind == "PERSONAL":
        return True
    if kind == "INBOXES":
        return name == "INBOX"
    if kind == "SUBSCRIBED":
        return name in subscribed()
    if kind == "MAILBOXES":
        return name in group.names
    if kind == "SUBTREE":
        return any(name == top or name.startswith(top + SEPARATOR) for top in group.names)
    return False  # SELECTED / SELECTED-DELAYED: the selected mailbox, handled by the session


def parse_notify(lx: Lexer) -> NotifySpec | None:
    """The arguments of NOTIFY after the command name: None for `NOTIFY NONE`, else the spec.

    ParseError (BAD) for what the grammar refuses; CommandFailed `[BADEVENT (...)]` for an event defined by
    the RFCs that this server does not report (RFC 5465 3.1)."""
    lx.sp()
    verb = lx.atom("SET or NONE").upper()
    if verb == "NONE":
        lx.end()
        return None
    if verb != "SET":
        raise ParseError("NOTIFY wants SET or NONE")
    lx.sp()
    status = False
    if lx.peek() != 0x28:
        if lx.atom("STATUS or an event group").upper() != "STATUS":
            raise ParseError("NOTIFY SET wants STATUS or an event group")
        status = True
        lx.sp()
    groups: list[EventGroup] = []
    while True:
        if len(groups) >= MAX_GROUPS:
            raise ParseError(f"NOTIFY allows at most {MAX_GROUPS} event groups")
        groups.append(_group(lx))
        if not lx.maybe_sp():
            break
    lx.end()
    kinds = [g.filter for g in groups]
    if "SELECTED" in kinds and "SELECTED-DELAYED" in kinds:
        raise ParseError("SELECTED and SELECTED-DELAYED exclude each other")
    if len(set(kinds) & {"SELECTED", "SELECTED-DELAYED"}) != sum(k in ("SELECTED", "SELECTED-DELAYED")
                                                                 for k in kinds):
        raise ParseError("the selected mailbox may be named in one event group only")
    return NotifySpec(status, tuple(groups))


def _group(lx: Lexer) -> EventGroup:
    lx.char(b"(")
    kind = lx.atom("mailbox filter").upper()
    if kind not in _FILTERS:
        raise ParseError(f"unknown NOTIFY mailbox filter {kind[:30]}")
    names: tuple[str, ...] = ()
    if kind in ("SUBTREE", "MAILBOXES"):
        lx.sp()
        if lx.peek() == 0x28:
            found: list[str] = []

            def one() -> str:
                if len(found) >= MAX_NAMES:
                    raise ParseError(f"NOTIFY allows at most {MAX_NAMES} mailboxes per filter")
                found.append(lx.mailbox())
                return found[-1]
            lx.paren_list(one)
            if not found:
                raise ParseError(f"{kind} needs at least one mailbox")
            names = tuple(dict.fromkeys(found))
        else:
            names = (lx.mailbox(),)
    lx.sp()
    events: list[str] = []
    fetch_atts: tuple[FetchItem, ...] = ()
    if lx.peek() == 0x28:
        lx.char(b"(")
        while True:
            name = lx.atom("event").upper()
            event = _EVENTS.get(name)
            if event is None:
                raise ParseError(f"unknown NOTIFY event {name[:30]}")
            if event in events:
                raise ParseError(f"event {event} named twice")
            events.append(event)
            if event == "MessageNew" and lx.peek() == 0x20 and lx.buf[lx.pos + 1:lx.pos + 2] == b"(":
                lx.sp()
                if kind not in ("SELECTED", "SELECTED-DELAYED"):
                    raise ParseError("MessageNew fetch attributes are allowed only for the selected mailbox")
                fetch_atts = _fetch_atts(lx)
            if lx.maybe_char(b")"):
                break
            lx.sp()
    elif lx.atom("events").upper() != "NONE":
        raise ParseError("events must be a list or NONE")
    lx.char(b")")
    unsupported = [e for e in events if e in _UNSUPPORTED_EVENTS]
    if unsupported:
        raise CommandFailed(f"Event {unsupported[0]} is not supported",
                            f"BADEVENT ({' '.join(SUPPORTED_EVENTS)})")
    if kind in ("SELECTED", "SELECTED-DELAYED") and set(events) - _MESSAGE_EVENTS:
        raise ParseError("only message events apply to the selected mailbox")
    return EventGroup(kind, names, frozenset(events), fetch_atts)


def _fetch_atts(lx: Lexer) -> tuple[FetchItem, ...]:
    items: list[FetchItem] = []

    def one() -> str:
        if len(items) >= MAX_FETCH_ATTS:
            raise ParseError(f"at most {MAX_FETCH_ATTS} fetch attributes")
        text = lx.atom("fetch attribute")
        item = parse_item(text)
        if item.sets_seen or item.name in ("RFC822", "RFC822.TEXT"):
            raise ParseError("a notification must not set \\Seen: use BODY.PEEK")
        items.append(item)
        return text
    lx.paren_list(one)
    if not items:
        raise ParseError("empty fetch attribute list")
    return tuple(items)


def status_items(events: frozenset[str]) -> tuple[str, ...]:
    """The STATUS items a mailbox's events call for, in wire order (empty: no STATUS for these events)."""
    wanted = {item for event in events for item in _STATUS_FOR.get(event, ())}
    return tuple(item for item in _STATUS_ORDER if item in wanted)


class NotifyCommands(SessionCore):
    """The NOTIFY command and what it makes the session send (a mixin of ImapSession)."""

    notify: NotifySpec | None = None
    _notify_status: dict[str, None] | None = None  # mailboxes whose STATUS is owed, in the order they changed
    _notify_lines: list[bytes] | None = None  # LIST lines owed

    def cmd_notify(self, tag: str, lx: Lexer) -> None:
        spec = parse_notify(lx)
        # RFC 5465 3.1: a NOTIFY is an implicit NOOP; what the previous NOTIFY held back goes with its reply too
        self._release_held()
        self.notify = spec
        hub = getattr(self, "_user_sessions", None)
        if hub is not None:
            (hub.watch if spec is not None else hub.unwatch)(self)
        self._notify_status = {}
        self._notify_lines = []
        if spec is not None and spec.status:
            sel = self.selected
            for info in self.store.list_mailboxes(self.user):
                if sel is not None and info.name == sel.name:
                    continue
                items = status_items(spec.events_for(info.name, self._subscribed_names))
                if items:
                    self._notify_status[info.name] = None
        self._notify_flush()
        self.ok(tag, "NOTIFY completed.")

    def _subscribed_names(self) -> set[str]:
        return set(self.store.subscriptions(self.user))

    # -- store events ---------------------------------------------------------------------------------------
    def notify_event(self, event: object) -> bool:
        """A store event of this session's user: note what NOTIFY owes the client. True when something is now
        owed (the session then has it sent as soon as it may)."""
        spec = self.notify
        if spec is None or getattr(event, "origin", None) is self:
            return False
        sel = self.selected
        if isinstance(event, (MessageAppended, FlagsChanged, MessagesExpunged)):
            name = event.mailbox
            if sel is not None and name == sel.name:
                return False  # the selected mailbox's own lines (EXISTS, EXPUNGE, FETCH) tell it
            kind = {MessageAppended: "MessageNew", FlagsChanged: "FlagChange",
                    MessagesExpunged: "MessageExpunge"}[type(event)]
            events = spec.events_for(name, self._subscribed_names)
            if kind not in events or not status_items(events):
                return False
            return self._owe_status(name)
        if isinstance(event, (MailboxCreated, MailboxDeleted, MailboxRenamed)):
            names = [event.mailbox] + ([event.new_name] if isinstance(event, MailboxRenamed) else [])
            if not any("MailboxName" in spec.events_for(n, self._subscribed_names) for n in names):
                return False
            if isinstance(event, MailboxCreated):
                line = b'* LIST () "/" %s\r\n' % self.wire_name(event.mailbox)
            elif isinstance(event, MailboxDeleted):
                line = b'* LIST (\\NonExistent) "/" %s\r\n' % self.wire_name(event.mailbox)
            else:
                line = b'* LIST () "/" %s ("OLDNAME" (%s))\r\n' % (self.wire_name(event.new_name),
                                                                     self.wire_name(event.mailbox))
                if self._notify_status is not None and event.mailbox in self._notify_status:
                    del self._notify_status[event.mailbox]
            return self._owe_line(line)
        return False

    def notify_subscription(self, user: str, name: str, subscribed: bool, origin: object) -> bool:
        """A SUBSCRIBE / UNSUBSCRIBE by any session of the server (`UserSessions.subscription_changed`)."""
        spec = self.notify
        if spec is None or origin is self or user != self.user or getattr(self, "closed", False):
            return False
        if "SubscriptionChange" not in spec.events_for(name, lambda: {name}):
            return False
        attrs = b"\\Subscribed" if subscribed else b""
        if self._owe_line(b'* LIST (%s) "/" %s\r\n' % (attrs, self.wire_name(name))):
            self._push_soon()  # type: ignore[attr-defined]
        return True

    def subscription_changed(self, name: str, subscribed: bool) -> None:
        """This session (un)subscribed `name`: tell the server's other sessions (their NOTIFY may ask)."""
        hub = getattr(self, "_user_sessions", None)
        if hub is not None and self.user is not None:
            hub.subscription_changed(self.user, name, subscribed, self)

    def notify_stop(self) -> None:
        """The session ends: no more subscription news."""
        hub = getattr(self, "_user_sessions", None)
        if hub is not None:
            hub.unwatch(self)
        self.notify = None

    def _owe_status(self, name: str) -> bool:
        pending = self._notify_status
        assert pending is not None
        if name in pending:
            return False
        pending[name] = None
        return self._check_overflow()

    def _owe_line(self, line: bytes) -> bool:
        lines = self._notify_lines
        assert lines is not None
        lines.append(line)
        return self._check_overflow()

    def _check_overflow(self) -> bool:
        if len(self._notify_status or ()) + len(self._notify_lines or ()) <= MAX_PENDING:
            return True
        # RFC 5465 5.8: too much to tell; the client must resynchronise by itself
        self.notify = None
        self._release_held()
        self._notify_status = {}
        self._notify_lines = [b"* OK [NOTIFICATIONOVERFLOW] Too many notifications; NOTIFY is now off\r\n"]
        return True

    # -- telling the client ---------------------------------------------------------------------------------
    def notify_owed(self) -> bool:
        return bool(self._notify_status) or bool(self._notify_lines)

    def _notify_flush(self) -> None:
        """Write the notifications owed (LIST lines first, then one STATUS per changed mailbox)."""
        lines = self._notify_lines
        if lines:
            for line in lines:
                self._write(line)
            lines.clear()
        pending = self._notify_status
        if not pending:
            return
        names = list(pending)
        pending.clear()
        spec = self.notify
        if spec is None:
            return
        sel = self.selected
        for name in names:
            if sel is not None and name == sel.name:
                continue
            items = status_items(spec.events_for(name, self._subscribed_names))
            if not items:
                continue
            try:
                info = self.store.mailbox(self.user, name)
            except NoSuchMailbox:
                continue
            values = {"MESSAGES": info.exists, "UIDNEXT": info.uidnext, "UIDVALIDITY": info.uidvalidity,
                      "HIGHESTMODSEQ": info.highestmodseq + MODSEQ_SHIFT}
            body = " ".join(f"{item} {values[item]}" for item in items)
            self._write(b"* STATUS %s (%s)\r\n" % (self.wire_name(info.name), body.encode()))

    def notify_held_events(self) -> frozenset[str]:
        """The selected mailbox's message events this client does not want: with NOTIFY, all but those its
        SELECTED / SELECTED-DELAYED group names (RFC 5465 3.1: no such group is SELECTED NONE, and a group
        naming the mailbox otherwise does not count); without NOTIFY, none."""
        spec = self.notify
        if spec is None:
            return frozenset()
        group = spec.selected_group()
        return _MESSAGE_EVENTS if group is None else _MESSAGE_EVENTS - group.events

    def _release_held(self) -> None:
        """What NOTIFY held back in the selected view is owed again (sent at the next point that may)."""
        sel = self.selected
        if sel is not None:
            touched = sel.release()
            if touched:
                self.search_contexts_touch(touched)  # type: ignore[attr-defined]

    def notify_pushes_selected(self) -> bool:
        """Whether the selected mailbox's changes may be sent between commands (a SELECTED filter with events)."""
        spec = self.notify
        if spec is None or self.selected is None:
            return False
        group = spec.selected_group()
        return group is not None and bool(group.events)

    def notify_expunge_between_commands(self) -> bool:
        """SELECTED (not SELECTED-DELAYED) with MessageExpunge: expunges go out at once (RFC 5465 5.3)."""
        spec = self.notify
        group = spec.selected_group() if spec is not None else None
        return group is not None and group.filter == "SELECTED" and "MessageExpunge" in group.events

    def notify_new_fetch(self, new_uids: list[int]) -> None:
        """After EXISTS for `new_uids`: the FETCH lines MessageNew's fetch attributes ask for."""
        spec = self.notify
        sel = self.selected
        group = spec.selected_group() if spec is not None else None
        if group is None or sel is None or not group.fetch_atts or "MessageNew" not in group.events:
            return
        items = list(group.fetch_atts)
        if (self.qresync or self.rev2) and all(i.name != "UID" for i in items):  # type: ignore[attr-defined]
            # RFC 7162 3.2.4 and RFC 9051 7.5.2: an unsolicited FETCH carries UID
            items.insert(0, FetchItem("UID"))
        renderers = [self._renderer(sel, item) for item in items]  # type: ignore[attr-defined]
        needs_view = any(i.section is not None or i.name in ("ENVELOPE", "BODYSTRUCTURE", "BODY",
                                                             "RFC822.HEADER") for i in items)
        for uid in new_uids:
            seq = sel.seq_of(uid)
            if seq is None or uid in sel.gone:
                continue
            rec = sel.records[uid]
            view = raw = None
            if needs_view:
                try:
                    view = self._view(sel, uid)  # type: ignore[attr-defined]
                    if self.rev2:  # type: ignore[attr-defined]
                        view = run_steps(view.rev2_steps())  # message/global parts (mime/view.py)
                except Exception:  # noqa: BLE001 - expunged meanwhile: the EXPUNGE will tell
                    continue
                raw = view.raw
            parts = []
            for render in renderers:
                part = render(uid, rec, raw, view)
                if type(part) is not bytes:
                    data = bytes(part.make())
                    part = b"%b {%d}\r\n%b" % (part.label, len(data), data)
                parts.append(part)
            sel.flush_keywords(self._out)
            self._write(b"* %d FETCH (%b)\r\n" % (seq, b" ".join(parts)))


__all__ = ["EventGroup", "NotifyCommands", "NotifySpec", "SUPPORTED_EVENTS", "parse_notify", "status_items",
           "CommandFailed"]
