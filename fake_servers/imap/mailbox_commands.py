"""Commands on whole mailboxes: SELECT/EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE (APPEND:
append.py).

A mixin of ImapSession (session.py): the methods use the session's state, output buffer and store. LIST, LSUB
and STATUS come from listext.py (`ListCommands`, a base of this mixin).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from ..store.base import SEPARATOR, MailboxExists, MailboxInfo, NoSuchMailbox, StoreError
from .errors import CommandFailed, ParseError
from .lexer import NUMBER_MAX, Lexer
from .listext import ListCommands
from .listext import mailbox_wire as mailbox_wire  # where notify.py and others find it
from .objectid import mailbox_id
from .search import _MONTHS
from .selected import MODSEQ_SHIFT, SelectedMailbox
from .seqset import SequenceSet, compress
from .state import Event

_DATE_TIME = re.compile(r"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z")
_SPECIAL_USES = {u.lower(): u for u in ("\\Sent", "\\Trash", "\\Drafts", "\\Junk", "\\Archive", "\\All",
                                       "\\Flagged")}


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


class MailboxCommands(ListCommands):
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
        if self.rev2:  # RFC 9051: no \Recent (rev2.py)
            recent: set[int] = set()
        elif readonly:  # EXAMINE shows \Recent but leaves it for a later SELECT (RFC 3501 6.3.2)
            recent = self.store.peek_recent(self.user, info.name) & set(uids)
        else:
            recent = self.store.claim_recent(self.user, info.name, uids)
        sel = SelectedMailbox(self.user, info.name, readonly, info.uidvalidity, records, recent,
                              info.highestmodseq)
        sel.report_recent = not self.rev2
        self.selected = sel
        self._transition(Event.SELECTED)
        flags = sel.flag_atoms()
        out = [f"* FLAGS ({flags})"]
        if readonly:
            out.append("* OK [PERMANENTFLAGS ()] Read-only mailbox.")
        else:
            out.append(f"* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted.")
        out.append(f"* {len(records)} EXISTS")
        if self.rev2:  # RFC 9051 6.3.2: the mailbox's LIST line; no RECENT, no [UNSEEN n]
            out.append(self.rev2_select_list(info))  # type: ignore[attr-defined]
        else:
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
        out.append(f"* OK [MAILBOXID ({mailbox_id(self.user, info.uidvalidity)})] Ok")  # RFC 8474 4.2
        self._write(("\r\n".join(out) + "\r\n").encode())
        if qresync_args is not None:
            self._qresync_select(sel, info, *qresync_args)
        mode = "READ-ONLY" if readonly else "READ-WRITE"
        self.ok(tag, f"[{mode}] {'Examine' if readonly else 'Select'} completed.")

    def _qresync_params(self, lx: Lexer):
        """(uidvalidity modseq [known-uids [(seq-set uid-set)]])"""
        lx.char(b"(")
        uidvalidity = lx.number("uidvalidity", NUMBER_MAX)
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
        kept = set(self.store.subscriptions(self.user)).intersection(new)  # subscribed before they existed
        try:
            info = self.store.create_mailbox(self.user, name, special_use, origin=self)
        except MailboxExists:
            raise CommandFailed("Mailbox already exists", "ALREADYEXISTS") from None
        for created in new:  # RFC 3501: CREATE does not subscribe (nor unsubscribe)
            if created not in kept:
                self.store.set_subscribed(self.user, created, False)
        self.ok(tag, f"[MAILBOXID ({mailbox_id(self.user, info.uidvalidity)})] Create completed.")  # RFC 8474 4.1

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
        was_subscribed = self.store.mailbox(self.user, name).subscribed if self._exists(name) else False
        self.store.delete_mailbox(self.user, name, origin=self)
        if was_subscribed:  # RFC 3501 6.3.6: a subscription outlives its mailbox (LIST shows \NonExistent)
            self.store.set_subscribed(self.user, name, True)
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
        self.subscription_changed(name, True)  # type: ignore[attr-defined]  # NOTIFY (notify.py)
        self.ok(tag, "Subscribe completed.")

    def cmd_unsubscribe(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        name = lx.mailbox()
        lx.end()
        self.store.set_subscribed(self.user, name, False)
        self.subscription_changed(name, False)  # type: ignore[attr-defined]  # NOTIFY (notify.py)
        self.ok(tag, "Unsubscribe completed.")


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
