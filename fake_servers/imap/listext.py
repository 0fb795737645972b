"""LIST (RFC 3501, LIST-EXTENDED RFC 5258, LIST-STATUS RFC 5819, SPECIAL-USE RFC 6154), LSUB and STATUS
(with SIZE, RFC 8438, and MAILBOXID, RFC 8474).

Why one module: these commands share one question, "which names does this user have, and what is each" (a
mailbox, a hole between mailboxes, a subscription without a mailbox), and one answer line format. The parser
(`parse_list`) is a plain function of the command's bytes, so it is tested on its own; the mixin
(`ListCommands`) answers from the store.

What LIST answers, as Dovecot 2.3 does:
- A plain LIST (no selection options, no RETURN, one pattern) shows \\HasChildren / \\HasNoChildren and the
  special-use attributes; a name that exists only as the parent of mailboxes (a hole) is \\Noselect.
- An extended LIST shows what it asks for: \\Subscribed (selection or return SUBSCRIBED), children (return
  CHILDREN), special use (selection or return SPECIAL-USE), and a hole or a subscription without a mailbox as
  \\NonExistent. With RECURSIVEMATCH, a name that matches and has a descendant meeting the selection criteria
  which no pattern matches gets `(CHILDINFO ("SUBSCRIBED"))`. RETURN (STATUS (...)) adds a STATUS line after
  the LIST line of every mailbox that exists.
- REMOTE is accepted and changes nothing (there are no remote mailboxes).

Bounds: at most `MAX_PATTERNS` patterns; the answer is built in steps (`_LIST_STEP` names, and a fixed budget
of pattern tests per step), so a tree of thousands of mailboxes or subscriptions does not hold the loop.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..store.base import SEPARATOR, MailboxInfo, NoSuchMailbox
from .errors import CommandFailed, ParseError
from .lexer import Lexer
from .names import ListPattern
from .objectid import mailbox_id
from .selected import MODSEQ_SHIFT
from .serialise import quote, serialise
from .state import SessionCore
from .utf7 import encode as utf7_encode

_ATOM_SAFE = re.compile(r"[A-Za-z0-9_.\-/&+,:;=!~@#$^'`|?<>]+\Z")

#: STATUS items, in the order they are written (RFC 3501, RFC 7162 HIGHESTMODSEQ, RFC 8438 SIZE,
#: RFC 8474 MAILBOXID).
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "HIGHESTMODSEQ", "SIZE",
                "MAILBOXID")
#: Items only an IMAP4rev2 session may ask for (RFC 9051 6.3.11).
REV2_STATUS_ITEMS = frozenset({"DELETED"})
SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
#: How many patterns one LIST may give (each name is tested against each).
MAX_PATTERNS = 100

#: LIST writes its answer in steps of this many names (a client's tree may be thousands).
_LIST_STEP = 256
#: ... or this many when each gets a STATUS line.
_STATUS_STEP = 16
#: Pattern tests one step may make (RECURSIVEMATCH tests every ancestor of every subscription).
_MATCH_BUDGET = 20000


def mailbox_wire(name: str, utf8: bool = False) -> bytes:
    """A mailbox name as written in responses: modified UTF-7 (UTF-8 with `utf8`: IMAP4rev2, UTF8=ACCEPT), an
    atom when it can be, else quoted (a literal for what a quoted string cannot hold)."""
    enc = name if utf8 else utf7_encode(name)
    if _ATOM_SAFE.match(enc) and enc.upper() != "NIL":
        return enc.encode("ascii")
    if utf8:
        return serialise(enc, utf8=True)
    return quote(enc)


@dataclass(frozen=True)
class ListRequest:
    """One parsed LIST command."""

    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status: tuple[str, ...] = ()  # RETURN (STATUS (...)) items, in wire order
    extended: bool = False  # selection options, several patterns or RETURN were given (RFC 5258)

    @property
    def show_subscribed(self) -> bool:
        return "SUBSCRIBED" in self.selection or "SUBSCRIBED" in self.returns

    @property
    def show_children(self) -> bool:
        return not self.extended or "CHILDREN" in self.returns

    @property
    def show_special_use(self) -> bool:
        return not self.extended or "SPECIAL-USE" in self.returns or "SPECIAL-USE" in self.selection


def parse_status_items(lx: Lexer) -> tuple[str, ...]:
    """'(' status-att *(SP status-att) ')': the items in wire order, each once; BAD for none or an unknown one."""
    items = {s.upper() for s in lx.paren_list(lambda: lx.atom("status item"))}
    if not items:
        raise ParseError("Empty STATUS item list")
    unknown = sorted(items - set(STATUS_ITEMS))
    if unknown:
        raise ParseError(f"unknown STATUS item {unknown[0][:20]}")
    return tuple(item for item in STATUS_ITEMS if item in items)


def parse_list(lx: Lexer) -> ListRequest:
    """LIST's arguments (after the command name): [SP selection] SP reference SP pattern(s) [SP RETURN (...)]."""
    lx.sp()
    extended = False
    selection: set[str] = set()
    if lx.peek() == 0x28:
        extended = True
        selection = {s.upper() for s in lx.paren_list(lambda: lx.atom("selection option"))}
        unknown = sorted(selection - SELECT_OPTIONS)
        if unknown:
            raise ParseError(f"unknown LIST selection option {unknown[0][:20]}")
        if "RECURSIVEMATCH" in selection and not selection & {"SUBSCRIBED", "SPECIAL-USE"}:
            raise ParseError("RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE")
        lx.sp()
    reference = lx.mailbox_pattern()
    lx.sp()
    if lx.peek() == 0x28:
        extended = True
        patterns = lx.paren_list(lx.mailbox_pattern)
        if not patterns:
            raise ParseError("empty LIST pattern list")
        if len(patterns) > MAX_PATTERNS:
            raise ParseError(f"too many LIST patterns (over {MAX_PATTERNS})")
    else:
        patterns = [lx.mailbox_pattern()]
    returns: set[str] = set()
    status: tuple[str, ...] = ()
    if lx.maybe_sp():
        if lx.atom("RETURN").upper() != "RETURN":
            raise ParseError("expected RETURN")
        lx.sp()
        extended = True

        def option() -> str:
            nonlocal status
            if lx.peek() == 0x28:  # only STATUS takes a list, and only after its name
                raise ParseError("LIST return options nested too deeply (a list where an option belongs)")
            name = lx.atom("return option").upper()
            if name not in RETURN_OPTIONS:
                raise ParseError(f"unknown LIST return option {name[:20]}")
            if name == "STATUS":
                lx.sp()
                status = parse_status_items(lx)
            return name

        returns = set(lx.paren_list(option))
    lx.end()
    return ListRequest(reference, tuple(patterns), frozenset(selection), frozenset(returns), status, extended)


def matchers(reference: str, patterns: tuple[str, ...] | list[str]) -> list[ListPattern]:
    """The matchers of LIST/LSUB `patterns` under `reference`; "INBOX" in a pattern matches INBOX in any case."""
    out = []
    for pattern in patterns:
        full = pattern if pattern.startswith(SEPARATOR) or not reference else reference + pattern
        out.append(ListPattern(full))
        if full.upper().startswith("INBOX"):
            out.append(ListPattern("INBOX" + full[5:]))
    return out


def _has_children(sorted_names: list[str], name: str) -> bool:
    """Whether any name in `sorted_names` lies below `name`: its descendants sort right after `name/`."""
    prefix = name + SEPARATOR
    i = bisect.bisect_left(sorted_names, prefix)
    return i < len(sorted_names) and sorted_names[i].startswith(prefix)


def _ancestors(name: str) -> Iterator[str]:
    """"a/b/c" -> "a/b", "a" (nearest first)."""
    i = name.rfind(SEPARATOR)
    while i > 0:
        name = name[:i]
        yield name
        i = name.rfind(SEPARATOR)


def _order(name: str) -> tuple[bool, str]:
    return name != "INBOX", name


class ListCommands(SessionCore):
    """LIST, LSUB and STATUS (a mixin of ImapSession, through MailboxCommands)."""

    def cmd_list(self, tag: str, lx: Lexer) -> Iterator[None] | None:
        req = parse_list(lx)
        self.status_items_allowed(req.status)
        if req.patterns == ("",) and not req.extended:
            # RFC 3501 6.3.8: an empty pattern asks for the hierarchy delimiter and the root (in an extended
            # LIST it is a pattern like any other, as in Dovecot)
            self._write(b'* LIST (\\Noselect) "/" ""\r\n')
            self.ok(tag, "List completed.")
            return None
        return self._list_steps(tag, req)

    def _list_steps(self, tag: str, req: ListRequest) -> Iterator[None]:
        """The LIST answer, in steps (the module docstring says what it holds)."""
        store, user = self.store, self.user
        assert user is not None
        match = matchers(req.reference, req.patterns)
        budget = _MATCH_BUDGET

        def matches(name: str) -> bool:
            nonlocal budget
            budget -= len(match)
            return any(m.match(name) for m in match)

        boxes = {b.name: b for b in store.list_mailboxes(user)}
        names = sorted(boxes)  # children by bisection, not by a scan per mailbox
        subscribed = set(store.subscriptions(user)) if req.show_subscribed else set()
        by_subscription = "SUBSCRIBED" in req.selection
        by_special_use = "SPECIAL-USE" in req.selection
        if by_subscription or by_special_use:
            def chosen(name: str) -> bool:
                if by_subscription and name not in subscribed:
                    return False
                return not by_special_use or (name in boxes and boxes[name].special_use is not None)
            candidates = sorted(subscribed, key=_order) if by_subscription else list(boxes)
        else:
            def chosen(name: str) -> bool:
                return True
            # a hole (the parent of mailboxes, not a mailbox itself) is a name too (RFC 3501 6.3.8)
            holes = {a for name in boxes for a in _ancestors(name) if a not in boxes}
            candidates = sorted([*boxes, *holes], key=_order)
        listed: dict[str, bool] = {}  # name -> with CHILDINFO ("SUBSCRIBED")
        recursive = "RECURSIVEMATCH" in req.selection
        for i, name in enumerate(candidates, 1):
            if budget <= 0 or i % _LIST_STEP == 0:
                budget = _MATCH_BUDGET
                yield
            if not chosen(name):
                continue
            if matches(name):
                listed.setdefault(name, False)
            elif recursive and by_subscription:
                # RFC 5258 3.5: a matching ancestor learns it has a child meeting the criteria
                for parent in _ancestors(name):
                    if matches(parent):
                        listed[parent] = True
        step = _STATUS_STEP if req.status else _LIST_STEP  # a STATUS may read a whole mailbox's records
        for i, name in enumerate(sorted(listed, key=_order), 1):
            if i % step == 0:
                yield
            box = boxes.get(name)
            self._write(self._list_line(req, name, box, names, subscribed, listed[name]))
            if req.status and box is not None:
                self._write(self._status_line(box, req.status))
        self.ok(tag, "List completed.")

    def _list_line(self, req: ListRequest, name: str, box: MailboxInfo | None, names: list[str],
                   subscribed: set[str], childinfo: bool) -> bytes:
        attrs = []
        if req.show_subscribed and name in subscribed:
            attrs.append("\\Subscribed")
        if box is None:
            attrs.append("\\NonExistent" if req.extended else "\\Noselect")
        if req.show_children or self.rev2:  # RFC 9051: children are always reported
            attrs.append("\\HasChildren" if _has_children(names, name) else "\\HasNoChildren")
        if req.show_special_use and box is not None and box.special_use:
            attrs.append(box.special_use)
        extra = b' (CHILDINFO ("SUBSCRIBED"))' if childinfo else b""
        return b'* LIST (%s) "/" %s%s\r\n' % (" ".join(attrs).encode(), self.wire_name(name), extra)

    # -- LSUB -------------------------------------------------------------------------------------------------
    def cmd_lsub(self, tag: str, lx: Lexer) -> Iterator[None] | None:
        lx.sp()
        ref = lx.mailbox_pattern()
        lx.sp()
        pattern = lx.mailbox_pattern()
        lx.end()
        if not pattern:
            self.ok(tag, "Lsub completed.")
            return None
        return self._lsub_steps(tag, matchers(ref, [pattern]))

    def _lsub_steps(self, tag: str, match: list[ListPattern]) -> Iterator[None]:
        """LSUB lists subscribed names, whether or not the mailbox still exists. RFC 3501 6.3.9: when "%" stops
        above a subscribed "foo/bar" whose parent "foo" is not subscribed, "foo" is listed, with \\Noselect.
        In steps of `_LIST_STEP` names, as LIST."""
        assert self.user is not None
        subscribed = self.store.subscriptions(self.user)
        subscribed_set = set(subscribed)
        listed: dict[str, bool] = {}  # name -> shown as \Noselect
        for i, name in enumerate(subscribed, 1):
            if any(m.match(name) for m in match):
                listed[name] = False
            else:
                parts = name.split(SEPARATOR)
                for depth in range(len(parts) - 1, 0, -1):
                    parent = SEPARATOR.join(parts[:depth])
                    if parent not in subscribed_set and any(m.match(parent) for m in match):
                        listed.setdefault(parent, True)
                        break
            if i % _LIST_STEP == 0:
                yield
        self._write(b"".join(
            b"* LSUB (%s) \"/\" %s\r\n" % (b"\\Noselect" if noselect else b"", self.wire_name(name))
            for name, noselect in listed.items()))
        self.ok(tag, "Lsub completed.")

    # -- STATUS -----------------------------------------------------------------------------------------------
    def cmd_status(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        name = lx.mailbox()
        lx.sp()
        items = parse_status_items(lx)
        lx.end()
        self.status_items_allowed(items)
        assert self.user is not None
        try:
            info = self.store.mailbox(self.user, name)
        except NoSuchMailbox:
            raise CommandFailed(f"Mailbox doesn't exist: {name}", "NONEXISTENT") from None
        self._write(self._status_line(info, items))
        self.ok(tag, "Status completed.")

    def status_items_allowed(self, items: tuple[str, ...]) -> None:
        """DELETED is an IMAP4rev2 item: a rev1 session is refused it, as before rev2 existed."""
        if not self.rev2 and REV2_STATUS_ITEMS.intersection(items):
            raise ParseError(f"unknown STATUS item {sorted(REV2_STATUS_ITEMS.intersection(items))[0]}")

    def _status_line(self, info: MailboxInfo, items: tuple[str, ...]) -> bytes:
        """`* STATUS name (...)` with `items` (in wire order). Asking for HIGHESTMODSEQ turns CONDSTORE on
        (RFC 7162 3.1)."""
        assert self.user is not None
        values: list[str] = []
        for item in items:
            if item == "MESSAGES":
                values.append(f"MESSAGES {info.exists}")
            elif item == "RECENT":
                values.append(f"RECENT {len(self.store.peek_recent(self.user, info.name))}")
            elif item == "UIDNEXT":
                values.append(f"UIDNEXT {info.uidnext}")
            elif item == "UIDVALIDITY":
                values.append(f"UIDVALIDITY {info.uidvalidity}")
            elif item == "UNSEEN":
                values.append(f"UNSEEN {info.unseen}")
            elif item == "DELETED":  # RFC 9051 6.3.11
                deleted = sum(1 for r in self.store.messages(self.user, info.name) if "\\Deleted" in r.flags)
                values.append(f"DELETED {deleted}")
            elif item == "HIGHESTMODSEQ":
                self.enable_condstore()
                values.append(f"HIGHESTMODSEQ {info.highestmodseq + MODSEQ_SHIFT}")
            elif item == "SIZE":  # RFC 8438: the octets of every message, as RFC822.SIZE counts them
                values.append(f"SIZE {sum(r.size for r in self.store.messages(self.user, info.name))}")
            elif item == "MAILBOXID":
                values.append(f"MAILBOXID ({mailbox_id(self.user, info.uidvalidity)})")
        return b"* STATUS %s (%s)\r\n" % (self.wire_name(info.name), " ".join(values).encode())
