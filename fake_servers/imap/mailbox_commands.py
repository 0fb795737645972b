"""Commands on whole mailboxes: SELECT/EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST, LSUB, STATUS, APPEND.

A mixin of ImapSession (session.py): the methods use the session's state, output buffer and store.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from ..mime_limits import check_steps
from ..recall.format import strip_verified
from ..store.base import SEPARATOR, MailboxExists, MailboxInfo, NoSuchMailbox, StoreError
from .errors import CommandFailed, ParseError
from .lexer import Lexer
from .names import ListPattern
from .search import _MONTHS
from .selected import MODSEQ_SHIFT, SelectedMailbox
from .seqset import SequenceSet, compress
from .serialise import quote
from .state import Event, SessionCore
from .utf7 import encode as utf7_encode

_DATE_TIME = re.compile(r"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z")
_ATOM_SAFE = re.compile(r"[A-Za-z0-9_.\-/&+,:;=!~@#$^'`|?<>]+\Z")
_SPECIAL_USES = {u.lower(): u for u in ("\\Sent", "\\Trash", "\\Drafts", "\\Junk", "\\Archive", "\\All",
                                       "\\Flagged")}
_STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")


def mailbox_wire(name: str) -> bytes:
    """A mailbox name as written in responses: modified UTF-7, an atom when it can be, else quoted."""
    enc = utf7_encode(name)
    if _ATOM_SAFE.match(enc) and enc.upper() != "NIL":
        return enc.encode("ascii")
    return quote(enc)


def parse_date_time(text: str) -> datetime:
    m = _DATE_TIME.match(text)
    if not m or m.group(2).lower() not in _MONTHS:
        raise ParseError(f"bad date-time {text[:40]!r}")
    offset = timedelta(hours=int(m.group(8)), minutes=int(m.group(9)))
    if m.group(7) == "-":
        offset = -offset
    try:
        return datetime(int(m.group(3)), _MONTHS.index(m.group(2).lower()) + 1, int(m.group(1).strip()),
                        int(m.group(4)), int(m.group(5)), int(m.group(6)), tzinfo=timezone(offset))
    except ValueError:
        raise ParseError(f"bad date-time {text[:40]!r}") from None


#: LIST writes its answer in steps of this many mailboxes (a client's tree may be thousands).
_LIST_STEP = 256


def _patterns(ref: str, patterns: list[str]) -> list[ListPattern]:
    """The matchers of LIST/LSUB `patterns` under `ref`; "INBOX" in the pattern matches INBOX in any case."""
    out = []
    for pattern in patterns:
        full = pattern if pattern.startswith(SEPARATOR) or not ref else ref + pattern
        out.append(ListPattern(full))
        if full.upper().startswith("INBOX"):
            out.append(ListPattern("INBOX" + full[5:]))
    return out


def _has_children(sorted_names: list[str], name: str) -> bool:
    """Whether any name in `sorted_names` lies below `name`: its descendants sort right after `name/`."""
    prefix = name + SEPARATOR
    i = bisect.bisect_left(sorted_names, prefix)
    return i < len(sorted_names) and sorted_names[i].startswith(prefix)


class MailboxCommands(SessionCore):
    # -- SELECT / EXAMINE -------------------------------------------------------------------------------------
    def cmd_select(self, tag: str, lx: Lexer) -> None:
        self._select(tag, lx, readonly=False)

    def cmd_examine(self, tag: str, lx: Lexer) -> None:
        self._select(tag, lx, readonly=True)

    def _select(self, tag: str, lx: Lexer, readonly: bool) -> None:
        lx.sp()
        name = lx.mailbox()
        qresync_args = None
        if lx.maybe_sp():
            def param():
                word = lx.atom("select parameter").upper()
                nonlocal qresync_args
                if word == "CONDSTORE":
                    self.condstore = True
                elif word == "QRESYNC":
                    if not self.qresync:
                        raise ParseError("QRESYNC must be enabled first (ENABLE QRESYNC)")
                    lx.sp()
                    qresync_args = self._qresync_params(lx)
                else:
                    raise ParseError(f"unknown SELECT parameter {word[:20]}")
                return word
            lx.paren_list(param)
        lx.end()
        had_selection = self.selected is not None
        self.deselect()
        if had_selection:  # RFC 7162 3.2.11: a QRESYNC server says so whenever a selection ends implicitly
            self._write(b"* OK [CLOSED] Previous mailbox closed.\r\n")
        try:
            info = self.store.mailbox(self.user, name)
        except NoSuchMailbox:
            raise CommandFailed(f"Mailbox doesn't exist: {name}", "NONEXISTENT") from None
        records = self.store.messages(self.user, info.name)
        uids = [r.uid for r in records]
        if readonly:  # EXAMINE shows \Recent but leaves it for a later SELECT (RFC 3501 6.3.2)
            recent = self.store.peek_recent(self.user, info.name) & set(uids)
        else:
            recent = self.store.claim_recent(self.user, info.name, uids)
        sel = SelectedMailbox(self.user, info.name, readonly, info.uidvalidity, records, recent,
                              info.highestmodseq)
        self.selected = sel
        self._transition(Event.SELECTED)
        flags = sel.flag_atoms()
        out = [f"* FLAGS ({flags})"]
        if readonly:
            out.append("* OK [PERMANENTFLAGS ()] Read-only mailbox.")
        else:
            out.append(f"* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted.")
        out.append(f"* {len(records)} EXISTS")
        out.append(f"* {len(recent)} RECENT")
        for i, r in enumerate(records):
            if "\\Seen" not in r.flags:
                out.append(f"* OK [UNSEEN {i + 1}] First unseen.")
                break
        out.append(f"* OK [UIDVALIDITY {info.uidvalidity}] UIDs valid")
        out.append(f"* OK [UIDNEXT {info.uidnext}] Predicted next UID")
        # RFC 7162 3.1.2.1: a server that keeps mod-sequences sends HIGHESTMODSEQ on every SELECT/EXAMINE
        # (Dovecot only once modseqs are active for the mailbox, which they always are here)
        out.append(f"* OK [HIGHESTMODSEQ {info.highestmodseq + MODSEQ_SHIFT}] Highest")
        self._write(("\r\n".join(out) + "\r\n").encode())
        if qresync_args is not None:
            self._qresync_select(sel, info, *qresync_args)
        mode = "READ-ONLY" if readonly else "READ-WRITE"
        self.ok(tag, f"[{mode}] {'Examine' if readonly else 'Select'} completed.")

    def _qresync_params(self, lx: Lexer):
        """(uidvalidity modseq [known-uids [(seq-set uid-set)]])"""
        lx.char(b"(")
        uidvalidity = lx.number("uidvalidity")
        lx.sp()
        modseq = lx.number("mod-sequence")
        known = None
        if lx.maybe_sp():
            if lx.peek() != 0x28:
                known = SequenceSet.parse(lx.atom("known UIDs"))
                lx.maybe_sp()
            if lx.peek() == 0x28:  # seq-match-data: accepted, not needed (we answer exactly)
                lx.char(b"(")
                lx.atom("sequence set")
                lx.sp()
                lx.atom("UID set")
                lx.char(b")")
        lx.char(b")")
        return uidvalidity, modseq, known

    def _qresync_select(self, sel: SelectedMailbox, info: MailboxInfo, uidvalidity: int, modseq: int,
                        known: SequenceSet | None) -> None:
        if uidvalidity != info.uidvalidity:
            return
        vanished = missing_uids(known, sel.uids, info.uidnext)
        if vanished:
            self._write(b"* VANISHED (EARLIER) %s\r\n" % vanished.encode())
        for i, uid in enumerate(sel.uids):
            rec = sel.records[uid]
            if rec.modseq + MODSEQ_SHIFT > modseq:
                flags = " ".join(sel.flags_of(uid))
                self._write(f"* {i + 1} FETCH (UID {uid} FLAGS ({flags}) MODSEQ ({rec.modseq + MODSEQ_SHIFT}))\r\n".encode())

    # -- CREATE / DELETE / RENAME / SUBSCRIBE --------------------------------------------------------------
    def cmd_create(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        name = lx.mailbox()
        special_use = None
        if lx.maybe_sp():  # RFC 6154 CREATE-SPECIAL-USE: CREATE name (USE (\Sent))
            params = lx.value()
            if isinstance(params, list) and len(params) == 2 and str(params[0]).upper() == "USE":
                uses = params[1] if isinstance(params[1], list) else [params[1]]
                known = [str(u) for u in uses if str(u).lower() in _SPECIAL_USES]
                special_use = _SPECIAL_USES[known[0].lower()] if known else None
        lx.end()
        name = name.rstrip(SEPARATOR)
        if not name:
            raise CommandFailed("Empty mailbox name")
        if name == "INBOX":
            raise CommandFailed("INBOX always exists", "ALREADYEXISTS")
        problem = self.config.mailbox_names.create_problem(name)
        if problem:
            raise CommandFailed(problem, "CANNOT")
        levels = name.split(SEPARATOR)
        # the name and the ancestors CREATE will make (a few lookups: names are at most 32 levels deep)
        new = [n for n in (SEPARATOR.join(levels[:i]) for i in range(1, len(levels) + 1)) if not self._exists(n)]
        try:
            self.store.create_mailbox(self.user, name, special_use, origin=self)
        except MailboxExists:
            raise CommandFailed("Mailbox already exists", "ALREADYEXISTS") from None
        for created in new:  # RFC 3501: CREATE does not subscribe
            self.store.set_subscribed(self.user, created, False)
        self.ok(tag, "Create completed.")

    def _exists(self, name: str) -> bool:
        try:
            self.store.mailbox(self.user, name)
        except StoreError:  # no such mailbox, or a name none may have (CREATE then says why)
            return False
        return True

    def cmd_delete(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        name = lx.mailbox()
        lx.end()
        if name == "INBOX":
            raise CommandFailed("INBOX cannot be deleted")
        if self.selected is not None and self.selected.name == name:
            self.deselect()
        self.store.delete_mailbox(self.user, name, origin=self)
        self.ok(tag, "Delete completed.")

    def cmd_rename(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        old = lx.mailbox()
        lx.sp()
        new = lx.mailbox().rstrip(SEPARATOR)
        lx.end()
        if not new:
            raise CommandFailed("Empty mailbox name")
        limits = self.config.mailbox_names
        problem = limits.create_problem(new)
        if problem is None and self._exists(old):  # the names its children would get must be possible too
            source = self.store.mailbox(self.user, old).name
            below = [b.name[len(source):] for b in self.store.list_mailboxes(self.user)
                     if b.name.startswith(source + SEPARATOR)]
            problem = next(filter(None, (limits.create_problem(new + rest) for rest in below)), None)
        if problem:
            raise CommandFailed(problem, "CANNOT")
        try:
            self.store.rename_mailbox(self.user, old, new, origin=self)
        except MailboxExists:
            raise CommandFailed("Target mailbox already exists", "ALREADYEXISTS") from None
        self.ok(tag, "Rename completed.")

    def cmd_subscribe(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        name = lx.mailbox()
        lx.end()
        try:
            self.store.mailbox(self.user, name)
        except NoSuchMailbox:
            raise CommandFailed(f"Mailbox doesn't exist: {name}", "NONEXISTENT") from None
        self.store.set_subscribed(self.user, name, True)
        self.ok(tag, "Subscribe completed.")

    def cmd_unsubscribe(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        name = lx.mailbox()
        lx.end()
        self.store.set_subscribed(self.user, name, False)
        self.ok(tag, "Unsubscribe completed.")

    # -- LIST / LSUB ------------------------------------------------------------------------------------------
    def cmd_list(self, tag: str, lx: Lexer) -> Iterator[None] | None:
        lx.sp()
        selection: list[str] = []
        if lx.peek() == 0x28:  # RFC 5258 selection options (SUBSCRIBED, SPECIAL-USE, ...)
            selection = [s.upper() for s in lx.paren_list(lambda: lx.atom("selection option"))]
            lx.sp()
        ref = lx.mailbox_pattern()
        lx.sp()
        if lx.peek() == 0x28:
            patterns = lx.paren_list(lx.mailbox_pattern)
        else:
            patterns = [lx.mailbox_pattern()]
        returns: list[str] = []
        if lx.maybe_sp():
            if lx.atom("RETURN").upper() != "RETURN":
                raise ParseError("expected RETURN")
            lx.sp()
            returns = [str(v).upper() for v in lx.paren_list(lx.value)]
        lx.end()
        if patterns == [""] and not selection:
            self._write(b'* LIST (\\Noselect) "/" ""\r\n')
            self.ok(tag, "List completed.")
            return None
        extended = bool(selection or returns)  # RFC 5258: child info only when asked for then
        return self._list_steps(tag, _patterns(ref, patterns), subscribed_only="SUBSCRIBED" in selection,
                                special_only="SPECIAL-USE" in selection,
                                show_subscribed="SUBSCRIBED" in selection or "SUBSCRIBED" in returns,
                                show_children=not extended or "CHILDREN" in returns)

    def cmd_lsub(self, tag: str, lx: Lexer) -> Iterator[None] | None:
        lx.sp()
        ref = lx.mailbox_pattern()
        lx.sp()
        pattern = lx.mailbox_pattern()
        lx.end()
        if not pattern:
            self.ok(tag, "Lsub completed.")
            return None
        return self._lsub_steps(tag, _patterns(ref, [pattern]))

    def _lsub_steps(self, tag: str, matchers: list[ListPattern]) -> Iterator[None]:
        """LSUB lists subscribed names, whether or not the mailbox still exists. RFC 3501 6.3.9: when "%" stops
        above a subscribed "foo/bar" whose parent "foo" is not subscribed, "foo" is listed, with \\Noselect.
        In steps of `_LIST_STEP` names, as LIST."""
        subscribed = self.store.subscriptions(self.user)
        subscribed_set = set(subscribed)
        listed: dict[str, bool] = {}  # name -> shown as \Noselect
        for i, name in enumerate(subscribed, 1):
            if any(m.match(name) for m in matchers):
                listed[name] = False
            else:
                parts = name.split(SEPARATOR)
                for depth in range(len(parts) - 1, 0, -1):
                    parent = SEPARATOR.join(parts[:depth])
                    if parent not in subscribed_set and any(m.match(parent) for m in matchers):
                        listed.setdefault(parent, True)
                        break
            if i % _LIST_STEP == 0:
                yield
        self._write(b"".join(
            b"* LSUB (%s) \"/\" %s\r\n" % (b"\\Noselect" if noselect else b"", mailbox_wire(name))
            for name, noselect in listed.items()))
        self.ok(tag, "Lsub completed.")

    def _list_steps(self, tag: str, matchers: list[ListPattern], subscribed_only: bool, special_only: bool,
                    show_subscribed: bool, show_children: bool) -> Iterator[None]:
        """The LIST answer, `_LIST_STEP` mailboxes a step (a tree may hold thousands)."""
        boxes = self.store.list_mailboxes(self.user)
        names = sorted(b.name for b in boxes)  # children by bisection, not by a scan per mailbox
        subscribed = set(self.store.subscriptions(self.user)) if subscribed_only or show_subscribed else set()
        lines = []
        for i, box in enumerate(boxes, 1):
            if i % _LIST_STEP == 0:
                self._write(b"".join(lines))
                lines.clear()
                yield
            if not any(m.match(box.name) for m in matchers):
                continue
            if subscribed_only and box.name not in subscribed:
                continue
            if special_only and not box.special_use:
                continue
            attrs = []
            if show_children:
                attrs.append("\\HasChildren" if _has_children(names, box.name) else "\\HasNoChildren")
            if box.special_use:
                attrs.append(box.special_use)
            if show_subscribed and box.name in subscribed:
                attrs.append("\\Subscribed")
            lines.append(b"* LIST (%s) \"/\" %s\r\n" % (" ".join(attrs).encode(), mailbox_wire(box.name)))
        self._write(b"".join(lines))
        self.ok(tag, "List completed.")

    # -- STATUS -----------------------------------------------------------------------------------------------
    def cmd_status(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        name = lx.mailbox()
        lx.sp()
        items = [s.upper() for s in lx.paren_list(lambda: lx.atom("status item"))]
        lx.end()
        for item in items:
            if item not in _STATUS_ITEMS:
                raise ParseError(f"unknown STATUS item {item[:20]}")
        try:
            info = self.store.mailbox(self.user, name)
        except NoSuchMailbox:
            raise CommandFailed(f"Mailbox doesn't exist: {name}", "NONEXISTENT") from None
        values = {"MESSAGES": info.exists, "RECENT": len(self.store.peek_recent(self.user, info.name)), "UIDNEXT": info.uidnext,
                  "UIDVALIDITY": info.uidvalidity, "UNSEEN": info.unseen,
                  "HIGHESTMODSEQ": info.highestmodseq + MODSEQ_SHIFT}
        if "HIGHESTMODSEQ" in items:
            self.enable_condstore()
        body = " ".join(f"{item} {values[item]}" for item in _STATUS_ITEMS if item in items)
        self._write(b"* STATUS %s (%s)\r\n" % (mailbox_wire(info.name), body.encode()))
        self.ok(tag, "Status completed.")

    # -- APPEND -----------------------------------------------------------------------------------------------
    def cmd_append(self, tag: str, lx: Lexer) -> Iterator[None]:
        lx.sp()
        name = lx.mailbox()
        lx.sp()
        flags: list[str] = []
        when = None
        if lx.peek() == 0x28:
            flags = lx.paren_list(lx.flag)
            lx.sp()
        if lx.peek() == 0x22:
            when = parse_date_time(lx.quoted().decode("ascii", "replace"))
            lx.sp()
        if lx.peek() != 0x7B:
            raise ParseError("APPEND wants the message as a literal")
        raw = lx.literal()
        lx.end()
        return self._append_steps(tag, name, [f for f in flags if f not in ("\\Recent", "\\*")], when, raw)

    def _append_steps(self, tag: str, name: str, flags: list[str], when: datetime | None,
                      raw: bytes) -> Iterator[None]:
        """The structure SMTP refuses at DATA, APPEND refuses too (NO [LIMIT]), checked in bounded steps so a
        50 MB literal does not hold the loop. Line length is not checked here: clients APPEND drafts and old
        mail whose lines are longer than RFC 5322 allows, and Dovecot stores them."""
        limits = replace(self.cache.limits, max_line_length=max(len(raw), 1))
        violation = yield from check_steps(raw, limits)
        if violation is not None:
            self._write(f"{tag} {violation.imap_reply}\r\n".encode())
            return
        try:
            info = self.store.mailbox(self.user, name)
        except NoSuchMailbox:
            raise CommandFailed(f"Mailbox doesn't exist: {name}", "TRYCREATE") from None
        # The trust mark vouches for a delivery by this server's submission; an APPEND is not one.
        raw = strip_verified(raw)
        rec = self.store.append(self.user, info.name, raw, flags, when, origin=self)
        self.ok(tag, f"[APPENDUID {info.uidvalidity} {rec.uid}] Append completed.")


def missing_uids(known: SequenceSet | None, uids: list[int], uidnext: int) -> str:
    """UIDs (as a uid-set) below `uidnext` in `known` (or all) that are not in `uids`: what VANISHED (EARLIER)
    reports. Without an expunge log this may name UIDs that never existed, which RFC 7162 lets clients ignore."""
    top = uidnext - 1
    if top < 1:
        return ""
    ranges = known.resolve(max(uids[-1] if uids else top, top)) if known else [(1, top)]
    present = set(uids)
    out: list[int] = []
    pieces: list[str] = []
    for lo, hi in ranges:
        lo = max(lo, 1)
        hi = min(hi, top)
        if lo > hi:
            continue
        if hi - lo > 200000:  # a huge range: walk the gaps between present UIDs instead of every number
            start = lo
            for uid in sorted(u for u in present if lo <= u <= hi):
                if uid > start:
                    pieces.append(f"{start}:{uid - 1}" if uid - 1 > start else str(start))
                start = uid + 1
            if start <= hi:
                pieces.append(f"{start}:{hi}" if hi > start else str(start))
            continue
        out.extend(u for u in range(lo, hi + 1) if u not in present)
    text = compress(out)
    return ",".join(p for p in [text, *pieces] if p)
