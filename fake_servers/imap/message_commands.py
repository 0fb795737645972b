"""Commands on the messages of the selected mailbox: FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE, CLOSE, UNSELECT
and their UID forms.

A mixin of ImapSession (session.py). Why responses are built as one bytes buffer: FETCH of 10,000 messages must
be one pass and one write, with no await per message.
"""

from __future__ import annotations

from collections.abc import Callable

from ..store.base import MessageRecord, NoSuchMailbox, NoSuchMessage
from .errors import CommandFailed, ParseError
from .fetch_items import FetchItem, FetchRequest, parse_fetch_args
from .lexer import Lexer
from .mailbox_commands import missing_uids
from .search import Msg, internal_date_text, parse_search
from .selected import MODSEQ_SHIFT, SelectedMailbox
from .seqset import SequenceSet, compress
from .serialise import serialise
from .sort import parse_criteria

_VIEW_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})
_UID_COMMANDS = ("FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "SORT")


def _literal(head: bytes, data: bytes) -> bytes:
    return b"%b {%d}\r\n%b" % (head, len(data), data)


def _header_end(raw: bytes) -> int:
    i = raw.find(b"\r\n\r\n")
    if i >= 0:
        return i + 4
    j = raw.find(b"\n\n")
    if j >= 0:
        return j + 2
    return len(raw)


class MessageCommands:
    # -- helpers ----------------------------------------------------------------------------------------------
    def _sel(self) -> SelectedMailbox:
        sel = self.selected
        if sel is None:
            raise ParseError("No mailbox selected")
        return sel

    def _indexes(self, sel: SelectedMailbox, text: str, uid: bool) -> list[int]:
        """0-based positions in the client's view of the messages a set names."""
        sset = SequenceSet.parse(text)
        if uid:
            return sset.uid_indexes(sel.uids)
        if not sel.uids and all(lo == -1 or hi == -1 for lo, hi in sset.ranges):
            return []
        return [s - 1 for s in sset.seqs(len(sel.uids))]

    def _view(self, sel: SelectedMailbox, uid: int):
        return self.cache.get((self.user, sel.name, sel.uidvalidity, uid),
                              lambda: self.store.fetch_raw(self.user, sel.name, uid))

    def cmd_uid(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        name = lx.atom("UID command").upper()
        if name not in _UID_COMMANDS:
            raise ParseError(f"UID {name[:20]} is not a UID command")
        getattr(self, f"cmd_{name.lower()}")(tag, lx, uid=True)

    # -- CLOSE / UNSELECT / EXPUNGE ---------------------------------------------------------------------------
    def cmd_close(self, tag: str, lx: Lexer) -> None:
        lx.end()
        sel = self._sel()
        if not sel.readonly:
            deleted = [u for u in sel.uids if u not in sel.gone and "\\Deleted" in sel.records[u].flags]
            if deleted:
                self.store.expunge(self.user, sel.name, deleted, origin=self)
        self.deselect()
        self.ok(tag, "Close completed.", updates=False)

    def cmd_unselect(self, tag: str, lx: Lexer) -> None:
        lx.end()
        self._sel()
        self.deselect()
        self.ok(tag, "Unselect completed.", updates=False)

    def cmd_expunge(self, tag: str, lx: Lexer, uid: bool = False) -> None:
        sel = self._sel()
        targets = None
        if uid:
            lx.sp()
            idx = self._indexes(sel, lx.atom("UID set"), True)
            targets = [sel.uids[i] for i in idx]
        lx.end()
        if sel.readonly:
            raise CommandFailed("Mailbox is read-only", "READ-ONLY")
        if targets is None:
            self.store.expunge(self.user, sel.name, None, origin=self)
        else:
            chosen = [u for u in targets if u not in sel.gone and "\\Deleted" in sel.records[u].flags]
            if chosen:
                self.store.expunge(self.user, sel.name, chosen, origin=self)
        self._tagged_updates("EXPUNGE")
        code = f"[HIGHESTMODSEQ {sel.highestmodseq + MODSEQ_SHIFT}] " if self.condstore else ""
        self.ok(tag, f"{code}Expunge completed.", updates=False)

    # -- SEARCH -----------------------------------------------------------------------------------------------
    def cmd_sort(self, tag: str, lx: Lexer, uid: bool = False) -> None:
        sel = self._sel()
        lx.sp()
        key = parse_criteria(lx.paren_list(lambda: lx.atom("sort key")))
        lx.sp()
        charset = lx.astring().upper()
        if charset not in ("UTF-8", "US-ASCII", "UTF8"):
            raise CommandFailed(f"charset {charset} is not supported", "BADCHARSET (UTF-8 US-ASCII)")
        lx.sp()
        prog = parse_search(lx, lambda: len(sel.uids), lambda: sel.uids[-1] if sel.uids else 0)
        hits = self._matches(sel, prog)
        hits.sort(key=key)
        self._write(("* SORT" + "".join(f" {m.uid if uid else m.seq}" for m in hits) + "\r\n").encode())
        self.ok(tag, "Sort completed.", "SEARCH")

    def _matches(self, sel: SelectedMailbox, prog) -> list[Msg]:
        """The messages a search program selects, in sequence order."""
        if prog.message_id is not None:
            locs = self.store.find_by_message_id(self.user, prog.message_id)
            candidates = sorted(loc.uid for loc in locs if loc.mailbox == sel.name)
            positions = [p - 1 for p in (sel.seq_of(u) for u in candidates) if p is not None]
        else:
            positions = range(len(sel.uids))
        uids, records, recent, gone = sel.uids, sel.records, sel.recent, sel.gone
        pred = prog.pred
        out = []
        for i in positions:
            u = uids[i]
            if u in gone:
                continue
            msg = Msg(i + 1, u, records[u], u in recent, lambda u=u: self._view(sel, u))
            try:
                if pred(msg):
                    out.append(msg)
            except NoSuchMessage:
                continue
        return out

    def cmd_search(self, tag: str, lx: Lexer, uid: bool = False) -> None:
        sel = self._sel()
        lx.sp()
        prog = parse_search(lx, lambda: len(sel.uids), lambda: sel.uids[-1] if sel.uids else 0)
        if prog.uses_modseq:
            self.enable_condstore()
        matches = self._matches(sel, prog)
        hits = [m.uid if uid else m.seq for m in matches]
        highest = max((m.record.modseq for m in matches), default=0)
        line = "* SEARCH" + "".join(f" {n}" for n in hits)
        if prog.uses_modseq and hits:
            line += f" (MODSEQ {highest + MODSEQ_SHIFT})"
        self._write((line + "\r\n").encode())
        self.ok(tag, "Search completed.", "SEARCH")

    # -- FETCH ------------------------------------------------------------------------------------------------
    def cmd_fetch(self, tag: str, lx: Lexer, uid: bool = False) -> None:
        sel = self._sel()
        lx.sp()
        set_text = lx.atom("sequence set")
        lx.sp()
        req = parse_fetch_args(lx)
        if req.vanished and not (uid and self.qresync and req.changedsince is not None):
            raise ParseError("VANISHED needs UID FETCH, CHANGEDSINCE and QRESYNC enabled")
        idx = self._indexes(sel, set_text, uid)
        items = list(req.items)
        names = {i.name for i in items}
        if (uid or self.qresync) and "UID" not in names:
            items.insert(0, FetchItem("UID"))
        if req.changedsince is not None or "MODSEQ" in names:
            self.enable_condstore()
            if "MODSEQ" not in names:
                items.append(FetchItem("MODSEQ"))
        if req.vanished:
            uidnext = self.store.mailbox(self.user, sel.name).uidnext
            vanished = missing_uids(SequenceSet.parse(set_text), [u for u in sel.uids if u not in sel.gone],
                                    uidnext)
            if vanished:
                self._write(b"* VANISHED (EARLIER) %s\r\n" % vanished.encode())
        if req.changedsince is not None:
            cs = req.changedsince
            idx = [i for i in idx if sel.records[sel.uids[i]].modseq + MODSEQ_SHIFT > cs]
        if not sel.readonly and any(i.sets_seen for i in items):
            unseen = [sel.uids[i] for i in idx if sel.uids[i] not in sel.gone
                      and "\\Seen" not in sel.records[sel.uids[i]].flags]
            if unseen:
                self.store.store_flags(self.user, sel.name, unseen, ["\\Seen"], "add", origin=self)
                if "FLAGS" not in {i.name for i in items}:
                    items.insert(1 if uid else 0, FetchItem("FLAGS"))
        names = {i.name for i in items}
        if self.condstore and "FLAGS" in names and "MODSEQ" not in names:
            items.append(FetchItem("MODSEQ"))  # RFC 7162 3.2: with CONDSTORE on, FLAGS come with their MODSEQ
        missing = self._render_fetch(sel, idx, items)
        self._tagged_updates("UID" if uid else "FETCH")
        if missing:
            self._write(f"{tag} NO [EXPUNGEISSUED] Some of the requested messages no longer exist.\r\n".encode())
        else:
            self.ok(tag, "Fetch completed.", updates=False)

    def _render_fetch(self, sel: SelectedMailbox, idx: list[int], items: list[FetchItem]) -> bool:
        """Write the FETCH responses; True when some message's content was gone (expunged, not yet announced):
        its metadata is still answered from what the session knows, its content cannot be.

        Why renderers chosen once per command: FETCH 1:* of 10,000 messages repeats the same items per message;
        deciding per item and per message what an item is cost more than writing it.
        """
        out = self._out
        uids = sel.uids
        records = sel.records
        gone = sel.gone
        needs_raw = any(i.section is not None or i.name.startswith("RFC822") and i.name != "RFC822.SIZE"
                        for i in items)
        needs_content = needs_raw or any(i.name in _VIEW_ITEMS for i in items)
        render = [self._renderer(sel, item) for item in items]
        read_raw = self.store.fetch_raw
        user, mailbox = self.user, sel.name
        missing = False
        for i in idx:
            u = uids[i]
            if u in gone and needs_content:
                missing = True
                continue
            rec = records[u]
            raw = None
            try:
                if needs_raw:
                    raw = read_raw(user, mailbox, u)
                parts = [r(u, rec, raw) for r in render]
            except NoSuchMessage:
                missing = True
                continue
            out += b"* %d FETCH (%b)\r\n" % (i + 1, b" ".join(parts))
        return missing

    def _renderer(self, sel: SelectedMailbox, item: FetchItem) -> Callable[[int, MessageRecord, bytes | None], bytes]:
        """How to write `item` for one message: f(uid, record, raw or None) -> the item's bytes."""
        name = item.name
        if name == "UID":
            return lambda u, rec, raw: b"UID %d" % u
        if name == "FLAGS":
            flags = sel.flags_item
            return lambda u, rec, raw: flags(u, rec)
        if name == "MODSEQ":
            return lambda u, rec, raw: b"MODSEQ (%d)" % (rec.modseq + MODSEQ_SHIFT)
        if name == "RFC822.SIZE":
            return lambda u, rec, raw: b"RFC822.SIZE %d" % rec.size
        if name == "INTERNALDATE":
            return lambda u, rec, raw: b'INTERNALDATE "%s"' % internal_date_text(rec.internaldate).encode()
        if name == "ENVELOPE":
            return lambda u, rec, raw: b"ENVELOPE " + serialise(self._view(sel, u).envelope())
        if name == "BODYSTRUCTURE":
            return lambda u, rec, raw: b"BODYSTRUCTURE " + serialise(self._view(sel, u).bodystructure(True))
        if name == "BODY":
            return lambda u, rec, raw: b"BODY " + serialise(self._view(sel, u).bodystructure(False))
        if name == "RFC822":
            return lambda u, rec, raw: b"RFC822 {%d}\r\n%b" % (len(raw), raw)
        if name == "RFC822.HEADER":
            return lambda u, rec, raw: _literal(b"RFC822.HEADER", raw[:_header_end(raw)])
        if name == "RFC822.TEXT":
            return lambda u, rec, raw: _literal(b"RFC822.TEXT", raw[_header_end(raw):])
        section = item.section
        assert section is not None
        if not section.part and section.kind in (None, "HEADER", "TEXT"):
            kind = section.kind

            def data(u: int, raw: bytes) -> bytes:
                if kind is None:
                    return raw
                if kind == "HEADER":
                    return raw[:_header_end(raw)]
                return raw[_header_end(raw):]
        else:
            def data(u: int, raw: bytes) -> bytes:
                return self._view(sel, u).section(section.part, section.kind, section.fields)
        label = section.label.encode()
        origin = item.origin
        if origin is not None:
            count = item.count
            head = b"BODY[%s]<%d>" % (label, origin)
            return lambda u, rec, raw: _literal(head, data(u, raw)[origin:origin + count])
        head = b"BODY[%s]" % label
        return lambda u, rec, raw: _literal(head, data(u, raw))

    # -- STORE ------------------------------------------------------------------------------------------------
    def cmd_store(self, tag: str, lx: Lexer, uid: bool = False) -> None:
        sel = self._sel()
        lx.sp()
        set_text = lx.atom("sequence set")
        lx.sp()
        unchanged_since = None
        if lx.peek() == 0x28:
            def modifier():
                nonlocal unchanged_since
                word = lx.atom("STORE modifier").upper()
                if word != "UNCHANGEDSINCE":
                    raise ParseError(f"unknown STORE modifier {word[:20]}")
                lx.sp()
                unchanged_since = lx.number("mod-sequence")
                return word
            lx.paren_list(modifier)
            lx.sp()
            self.enable_condstore()
        item = lx.atom("STORE item").upper()
        mode = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove"}.get(item.removesuffix(".SILENT"))
        if mode is None:
            raise ParseError(f"unknown STORE item {item[:20]}")
        silent = item.endswith(".SILENT")
        lx.sp()
        flags = [f for f in lx.flag_list() if f not in ("\\Recent", "\\*")]
        lx.end()
        idx = self._indexes(sel, set_text, uid)
        if sel.readonly:
            raise CommandFailed("Mailbox is read-only", "READ-ONLY")
        targets = [sel.uids[i] for i in idx if sel.uids[i] not in sel.gone]
        store_since = None if unchanged_since is None else unchanged_since - MODSEQ_SHIFT
        update = self.store.store_flags(self.user, sel.name, targets, flags, mode, store_since, origin=self)
        failed = set(update.failed_modified)
        changed = {r.uid for r in update.changed}
        for r in (*update.changed, *update.unchanged):  # our own events may lag nothing, but be sure
            if r.uid in sel.records and r.uid not in sel.gone:
                sel.records[r.uid] = r
        out = self._out
        sel.flush_keywords(out)
        for i in idx:
            u = sel.uids[i]
            if u in failed or u in sel.gone:
                continue
            rec = sel.records[u]
            parts = []
            if silent:
                if unchanged_since is None or u not in changed:
                    continue
            else:
                parts.append(sel.flags_item(u, rec))
            if uid or self.qresync:
                parts.insert(0, b"UID %d" % u)
            if not silent:
                sel.pending_flags.pop(u, None)  # this response already shows the current flags
            if self.condstore:
                parts.append(b"MODSEQ (%d)" % (rec.modseq + MODSEQ_SHIFT))
            out += b"* %d FETCH (%b)\r\n" % (i + 1, b" ".join(parts))
        self._tagged_updates("UID" if uid else "STORE")
        if failed:
            if uid:
                failed_text = compress(failed)
            else:
                failed_text = compress(p for p in (sel.seq_of(u) for u in failed) if p is not None)
            self.ok(tag, f"[MODIFIED {failed_text}] Conditional STORE failed.", updates=False)
        else:
            self.ok(tag, "Store completed.", updates=False)

    # -- COPY / MOVE ------------------------------------------------------------------------------------------
    def cmd_copy(self, tag: str, lx: Lexer, uid: bool = False) -> None:
        self._copy_or_move(tag, lx, uid, move=False)

    def cmd_move(self, tag: str, lx: Lexer, uid: bool = False) -> None:
        self._copy_or_move(tag, lx, uid, move=True)

    def _copy_or_move(self, tag: str, lx: Lexer, uid: bool, move: bool) -> None:
        sel = self._sel()
        lx.sp()
        set_text = lx.atom("sequence set")
        lx.sp()
        dest = lx.mailbox()
        lx.end()
        idx = self._indexes(sel, set_text, uid)
        if move and sel.readonly:
            raise CommandFailed("Mailbox is read-only", "READ-ONLY")
        try:
            info = self.store.mailbox(self.user, dest)
        except NoSuchMailbox:
            raise CommandFailed(f"Mailbox doesn't exist: {dest}", "TRYCREATE") from None
        targets = [sel.uids[i] for i in idx if sel.uids[i] not in sel.gone]
        verb = "Move" if move else "Copy"
        if not targets:
            if idx:
                raise CommandFailed("Some of the requested messages no longer exist", "EXPUNGEISSUED")
            self.ok(tag, f"No messages to {verb.lower()}.")
            return
        if move:
            pairs = self.store.move(self.user, sel.name, targets, info.name, origin=self)
        else:
            pairs = self.store.copy(self.user, sel.name, targets, info.name, origin=self)
        code = ""
        if pairs:
            src = compress(p[0] for p in pairs)
            dst = ",".join(str(p[1]) for p in pairs)
            if [p[1] for p in pairs] == sorted(p[1] for p in pairs):
                dst = compress(p[1] for p in pairs)
            code = f"COPYUID {info.uidvalidity} {src} {dst}"
        if move:
            if code:
                self._write(f"* OK [{code}] Moved UIDs.\r\n".encode())
            self.ok(tag, f"{verb} completed.", "MOVE")
        else:
            self.ok(tag, f"[{code}] {verb} completed." if code else f"{verb} completed.", "COPY")


__all__ = ["MessageCommands", "FetchRequest"]
