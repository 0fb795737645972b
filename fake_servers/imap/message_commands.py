"""Commands on the messages of the selected mailbox: FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE, CLOSE, UNSELECT
and their UID forms.

A mixin of ImapSession (session.py). Why FETCH, SEARCH, SORT, STORE and COPY return generators: a command over a
message set is parsed and checked at once (BAD/NO before any work), then does its work in steps the session
drives (see session.py): one message (FETCH, SEARCH), one batch (STORE, COPY), one chunk of a large literal.
Between steps the session may stop, while the client is not reading or when the time slice is spent, so no
answer is built far beyond what the client has read and no command holds the event loop for long. Output still
goes into one buffer the session hands over in large writes, with no await per message.

What may happen between two steps, and why it is safe: other sessions and deliveries change the store, and the
selected view records it (selected.py) without renumbering anything until the tagged reply (no EXPUNGE during
FETCH, STORE, SEARCH, RFC 3501 7.4.1); a message expunged meanwhile is answered from what the session knows or
reported as EXPUNGEISSUED, exactly as for one expunged before the command; a keyword first seen meanwhile is
announced in `* FLAGS` before a FETCH shows it. A COPY cut short (by an error or the connection ending) takes
its copies back, so the destination is as it was (RFC 3501 6.4.7).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, TypeVar

from ..store.base import MessageRecord, NoSuchMailbox, NoSuchMessage, StoreError
from .binary import binary_renderer, literal_head
from .errors import CommandFailed, ParseError
from .esearch import ReturnOptions, parse_return
from .fetch_items import FetchItem, FetchRequest, parse_fetch_args
from .lexer import Lexer
from .mailbox_commands import missing_uids
from .objectid import email_id
from .search import Msg, internal_date_text, parse_search, seq_uid
from .selected import MODSEQ_SHIFT, SelectedMailbox
from .seqset import SequenceSet, compress
from .sort import SortProgram, parse_criteria
from .sort_keys import SortKeys
from .state import SessionCore

log = logging.getLogger("recall_lab.fake_servers.imap")

_VIEW_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})
_UID_COMMANDS = ("FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD")

#: A literal longer than this is written in pieces of STREAM_CHUNK octets, never joined with its response.
STREAM_MIN = 64 * 1024
STREAM_CHUNK = 64 * 1024
#: Messages per step of STORE and of FETCH's implicit \Seen (a flag change costs microseconds, a Maildir rename
#: tens of them) and of a FETCH of metadata only: few enough that one step stays well under the time slice.
BATCH = 128
#: Messages and octets per step of COPY (each message is read and written again).
COPY_BATCH = 32
COPY_BATCH_BYTES = 4 * 1024 * 1024
#: Messages per step of a search, SORT or THREAD when none of them is read (the predicate looks at flags or
#: UIDs only; the sort keys are cached): a microsecond or two each.
KEY_BATCH = 256
#: Messages a SORT/THREAD search decides on records alone per step (each costs well under a microsecond).
RECORD_BATCH = 4096

Steps = Iterator[None]
T = TypeVar("T")


class _Deferred:
    """A literal FETCH item (BODY[...], RFC822...) made when its turn comes in the response, from the message's
    raw bytes or view already in hand (the store cannot fail half-way through a response): written as
    `label {n}` and its octets, streamed in pieces when large.

    Why deferred: only one item's content exists at a time, however many items a command names; FETCH 1
    (BODY[1]<0.1000000> BODY[1]<1.1000000> ...) of a 50 MB message must not build every piece before writing
    the first."""

    __slots__ = ("label", "make", "binary")

    def __init__(self, label: bytes, make: Callable[[], bytes | memoryview], binary: bool = False) -> None:
        self.label = label
        self.make = make
        self.binary = binary  # BINARY octets: a literal8 (~{n}) when they hold a NUL


_Rendered = bytes | _Deferred


def _header_end(raw: bytes) -> int:
    i = raw.find(b"\r\n\r\n")
    if i >= 0:
        return i + 4
    j = raw.find(b"\n\n")
    if j >= 0:
        return j + 2
    return len(raw)


class MessageCommands(SessionCore):
    # -- helpers ----------------------------------------------------------------------------------------------
    def _sel(self) -> SelectedMailbox:
        sel = self.selected
        if sel is None:
            raise ParseError("No mailbox selected")
        return sel

    def _indexes(self, sel: SelectedMailbox, text: str, uid: bool) -> list[int]:
        """0-based positions in the client's view of the messages a set names (`$`: SEARCHRES, rev2.py)."""
        if text == "$":
            self.dollar_allowed()  # type: ignore[attr-defined]
            return self.saved_indexes(sel)  # type: ignore[attr-defined]
        sset = SequenceSet.parse(text)
        if uid:
            return sset.uid_indexes(sel.uids)
        if not sel.uids and all(lo == -1 or hi == -1 for lo, hi in sset.ranges):
            return []
        return [s - 1 for s in sset.seqs(len(sel.uids))]

    def _view(self, sel: SelectedMailbox, uid: int):
        return self.cache.get((self.user, sel.name, sel.uidvalidity, uid),
                              lambda: self.store.fetch_raw(self.user, sel.name, uid))

    def cmd_uid(self, tag: str, lx: Lexer) -> Steps | None:
        lx.sp()
        name = lx.atom("UID command").upper()
        if name not in _UID_COMMANDS:
            raise ParseError(f"UID {name[:20]} is not a UID command")
        return getattr(self, f"cmd_{name.lower()}")(tag, lx, uid=True)

    def _stream(self, data: bytes | memoryview) -> Steps:
        """A large literal's octets, one piece per step."""
        view = memoryview(data)
        out = self._out
        for pos in range(0, len(view), STREAM_CHUNK):
            out += view[pos:pos + STREAM_CHUNK]
            yield

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
    def cmd_sort(self, tag: str, lx: Lexer, uid: bool = False) -> Steps:
        sel = self._sel()
        lx.sp()
        ret = parse_return(lx, sort=True, save=self.rev2)  # ESORT (esearch.py)
        key = parse_criteria(lx.paren_list(lambda: lx.atom("sort key")))
        lx.sp()
        prog = self._charset_and_criteria(lx, sel)
        return self._sort_steps(tag, sel, prog, key, uid, ret)

    def _charset_and_criteria(self, lx: Lexer, sel: SelectedMailbox):  # noqa: ANN202 - search.py's program
        """SORT's and THREAD's shared tail (RFC 5256): a required charset, then the search criteria."""
        charset = lx.astring().upper()
        if charset not in ("UTF-8", "US-ASCII", "UTF8"):
            raise CommandFailed(f"charset {charset} is not supported", "BADCHARSET (UTF-8 US-ASCII)")
        lx.sp()
        return parse_search(lx, lambda: len(sel.uids), lambda: sel.uids[-1] if sel.uids else 0,
                            self.config.search_limits)

    def _sort_steps(self, tag: str, sel: SelectedMailbox, prog, key: SortProgram, uid: bool,
                    ret: ReturnOptions | None = None) -> Steps:
        hits = yield from self._match_steps(sel, prog, seq_uid)
        cached = yield from self._keys_steps(sel, [u for _, u in hits], key.groups)
        records = sel.records  # they stay until the tagged reply announces expunges
        order = key.order(hits, [records[u] for _, u in hits], cached)
        if ret is not None:
            self.esearch_reply(tag, sel, prog, uid, ret, [self._msg(sel, *h) for h in order], ordered=True)
            self.ok(tag, "Sort completed.", "SEARCH")
            return
        k = 1 if uid else 0
        self._write(("* SORT" + "".join([f" {h[k]}" for h in order]) + "\r\n").encode())
        self.ok(tag, "Sort completed.", "SEARCH")

    def _msg(self, sel: SelectedMailbox, seq: int, u: int) -> Msg:
        return Msg(seq, u, sel.records[u], u in sel.recent, lambda: self._view(sel, u))

    def _keys_steps(self, sel: SelectedMailbox, uids: list[int], groups: frozenset[str]
                    ) -> Generator[None, None, list[SortKeys]]:
        """Each message's SORT/THREAD keys (sort_keys.py, the server's shared cache), in order: a step after
        each message whose keys were read from its header, else after KEY_BATCH cached ones."""
        cache = self.cache.sort_keys
        get = cache.get
        user, name, validity = self.user, sel.name, sel.uidvalidity

        def view(key: tuple) -> Any:
            return self._view(sel, key[3])

        keys = [(user, name, validity, u) for u in uids]
        out = cache.cached(keys, groups)  # the warm case: every message's keys are there
        if None not in out:
            return out  # type: ignore[return-value]
        computed = cache.computed
        n = 0
        for i, k in enumerate(keys):
            if out[i] is None:
                out[i] = get(k, view, groups)
            n += 1
            if n >= KEY_BATCH or cache.computed != computed:
                computed = cache.computed
                n = 0
                yield
        return out  # type: ignore[return-value]

    @staticmethod
    def _record_matches(positions: Iterable[int], uids: list[int], records: dict, recent: set[int],
                        gone: set[int], prog) -> Generator[None, None, list[tuple[int, int]]]:
        """_match_steps for SORT and THREAD when no key reads a message (ALL, flags, dates, sizes, UIDs): the
        (sequence number, UID) pairs, without a Msg and its view closure per message, or even a predicate call
        when everything matches. A step after each RECORD_BATCH messages (well under a millisecond)."""
        positions = list(positions)
        out: list[tuple[int, int]] = []
        pred = prog.pred
        for start in range(0, len(positions), RECORD_BATCH):
            batch = positions[start:start + RECORD_BATCH]
            if prog.matches_all:
                out += [(i + 1, u) for i in batch if (u := uids[i]) not in gone]
            else:
                out += [(i + 1, u) for i in batch
                        if (u := uids[i]) not in gone and pred(Msg(i + 1, u, records[u], u in recent, _no_view))]
            yield
        return out

    def _matches(self, sel: SelectedMailbox, prog) -> Generator[None, None, list[Msg]]:
        """The messages a search program selects, in sequence order (the generator's return value)."""
        return (yield from self._match_steps(sel, prog, _itself))

    def _match_steps(self, sel: SelectedMailbox, prog, keep: Callable[[Msg], T]
                     ) -> Generator[None, None, list[T]]:
        """`keep(m)` of each message a search program selects, in sequence order (the generator's return
        value): a step after each message the predicate read (it may have parsed it), else after KEY_BATCH
        messages it decided on flags, UIDs or dates alone (microseconds each)."""
        if prog.message_id is not None:
            locs = self.store.find_by_message_id(self.user, prog.message_id)
            candidates = sorted(loc.uid for loc in locs if loc.mailbox == sel.name)
            positions = [p - 1 for p in (sel.seq_of(u) for u in candidates) if p is not None]
        else:
            positions = range(len(sel.uids))
        uids, records, recent, gone = sel.uids, sel.records, sel.recent, sel.gone
        pred = prog.pred
        if prog.record_only and keep is seq_uid:
            return (yield from self._record_matches(positions, uids, records, recent, gone, prog))
        needs_text = prog.needs_text
        out = []
        read = [0]  # views asked for since the last step
        cheap = 0

        def view(u: int) -> Any:
            read[0] += 1
            return self._view(sel, u)

        for i in positions:
            u = uids[i]
            if u in gone:
                continue
            msg = Msg(i + 1, u, records[u], u in recent, lambda u=u: view(u))
            try:
                if needs_text:  # decode a big message's text in bounded steps, other clients in between
                    yield from self._view(sel, u).prepare(("TEXT",))
                if pred(msg):
                    out.append(keep(msg))
            except NoSuchMessage:
                continue
            cheap += 1
            if read[0] or needs_text or cheap >= KEY_BATCH:
                read[0] = cheap = 0
                yield
        return out

    def cmd_search(self, tag: str, lx: Lexer, uid: bool = False) -> Steps:
        sel = self._sel()
        lx.sp()
        ret = parse_return(lx, sort=False, save=self.rev2)  # ESEARCH, CONTEXT=SEARCH (esearch.py)
        if self.utf8_accept and lx.rest()[:8].upper() == b"CHARSET ":  # type: ignore[attr-defined]
            raise ParseError("No CHARSET after ENABLE UTF8=ACCEPT (RFC 6855 3)")
        if ret is None and self.rev2:  # RFC 9051 6.4.4: an ESEARCH answer, RETURN (ALL) implied
            ret = ReturnOptions(all=True)
        prog = parse_search(lx, lambda: len(sel.uids), lambda: sel.uids[-1] if sel.uids else 0,
                            self.config.search_limits)
        if prog.uses_modseq:
            self.enable_condstore()
        if ret is not None:
            return self._esearch_steps(tag, sel, prog, uid, ret)
        return self._search_steps(tag, sel, prog, uid)

    def _search_steps(self, tag: str, sel: SelectedMailbox, prog, uid: bool) -> Steps:
        matches = yield from self._matches(sel, prog)
        hits = [m.uid if uid else m.seq for m in matches]
        highest = max((m.record.modseq for m in matches), default=0)
        line = "* SEARCH" + "".join(f" {n}" for n in hits)
        if prog.uses_modseq and hits:
            line += f" (MODSEQ {highest + MODSEQ_SHIFT})"
        self._write((line + "\r\n").encode())
        self.ok(tag, "Search completed.", "SEARCH")

    # -- FETCH ------------------------------------------------------------------------------------------------
    def cmd_fetch(self, tag: str, lx: Lexer, uid: bool = False) -> Steps:
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
        sets_seen = False
        if not sel.readonly and any(i.sets_seen for i in items):
            sets_seen = any(sel.uids[i] not in sel.gone and "\\Seen" not in sel.records[sel.uids[i]].flags
                            for i in idx)
            if sets_seen and "FLAGS" not in {i.name for i in items}:
                items.insert(1 if uid else 0, FetchItem("FLAGS"))
        names = {i.name for i in items}
        if self.condstore and "FLAGS" in names and "MODSEQ" not in names:
            items.append(FetchItem("MODSEQ"))  # RFC 7162 3.2: with CONDSTORE on, FLAGS come with their MODSEQ
        return self._fetch_steps(tag, sel, idx, _distinct(items), sets_seen, uid)

    def _fetch_steps(self, tag: str, sel: SelectedMailbox, idx: list[int], items: list[FetchItem],
                     sets_seen: bool, uid: bool) -> Steps:
        """Write the FETCH responses, then the tagged reply: NO [EXPUNGEISSUED] when some message's content was
        gone (expunged, not yet announced): its metadata is still answered from what the session knows, its
        content cannot be. A step per message when content is asked for (a large literal takes several), per
        BATCH messages when only metadata is (a few microseconds each).

        \\Seen is set batch by batch just before the batch is answered (as the client reads), so a FETCH the
        client abandons leaves unread what it never got.

        Why renderers chosen once per command: FETCH 1:* of 10,000 messages repeats the same items per message;
        deciding per item and per message what an item is cost more than writing it.
        """
        uids = sel.uids
        records = sel.records
        gone = sel.gone
        needs_raw = any(i.section is not None or i.name.startswith("RFC822") and i.name != "RFC822.SIZE"
                        or i.name == "EMAILID" for i in items)  # EMAILID: a hash of the bytes (objectid.py)
        needs_view = any(i.name in _VIEW_ITEMS or i.section is not None and not _whole_message(i) for i in items)
        needs_content = needs_raw or needs_view
        render = [self._renderer(sel, item) for item in items]
        # What the view can make ready in bounded steps (a message of 10,000 parts takes a few hundred ms to
        # parse whole): the structures asked for, and the part tree when a section names a part.
        prep = [i.name for i in items if i.name in ("BODYSTRUCTURE", "BODY", "ENVELOPE") and i.section is None]
        if any(i.section is not None and not _whole_message(i) for i in items):
            prep.append("TREE")
        read_raw = self.store.fetch_raw
        user = self.user
        missing = False
        for start in range(0, len(idx), BATCH):
            batch = idx[start:start + BATCH]
            if sets_seen:
                unseen = [uids[i] for i in batch if uids[i] not in gone and "\\Seen" not in records[uids[i]].flags]
                if unseen:
                    self.store.store_flags(user, sel.name, unseen, ["\\Seen"], "add", origin=self)
            for i in batch:
                u = uids[i]
                if u in gone and needs_content:
                    missing = True
                    continue
                rec = records[u]
                raw = view = None
                try:  # everything the store may fail on, before a byte of the response is written
                    if needs_view:
                        view = self._view(sel, u)
                        if self.rev2:  # message/global parts described as messages (RFC 9051, mime/view.py)
                            view = yield from view.rev2_steps()
                        raw = view.raw
                    elif needs_raw:
                        raw = read_raw(user, sel.name, u)
                except NoSuchMessage:
                    missing = True
                    continue
                if view is not None and prep:
                    yield from view.prepare(prep)
                parts = [r(u, rec, raw, view) for r in render]
                out = self._out
                sel.flush_keywords(out)  # a keyword these parts show is announced first (RFC 3501 7.2.6)
                if needs_content:
                    rest = self._write_fetch(i + 1, parts)
                    if rest is not None:
                        yield from rest
                    yield
                else:
                    out += b"* %d FETCH (%b)\r\n" % (i + 1, b" ".join(parts))  # type: ignore[arg-type]
            if not needs_content:
                yield
        self._tagged_updates("UID" if uid else "FETCH")
        if missing:
            self._write(f"{tag} NO [EXPUNGEISSUED] Some of the requested messages no longer exist.\r\n".encode())
        else:
            self.ok(tag, "Fetch completed.", updates=False)

    def _write_fetch(self, seq: int, parts: list[_Rendered]) -> Steps | None:
        """One FETCH response with content items, made one at a time as they are written. Written whole when
        it is small (None); else written up to its first large literal, and the steps that finish it returned."""
        pieces: list[bytes | memoryview] = [b"* %d FETCH (" % seq]
        size = 0
        for k, part in enumerate(parts):
            if k:
                pieces.append(b" ")
            if type(part) is bytes:
                pieces.append(part)
                size += len(part)
                continue
            assert isinstance(part, _Deferred)
            try:
                data = part.make()
            except Exception:
                self._out += b"".join(pieces)
                self._end_broken(part)
                raise
            pieces.append(literal_head(part.label, data, part.binary))
            if len(data) > STREAM_MIN or size + len(data) > STREAM_CHUNK:
                self._out += b"".join(pieces)
                return self._finish_fetch(data, parts, k + 1)
            pieces.append(data)
            size += len(data)
        pieces.append(b")\r\n")
        self._out += b"".join(pieces)
        return None

    def _finish_fetch(self, data: bytes | memoryview, parts: list[_Rendered], start: int) -> Steps:
        """The rest of a FETCH response: `data`, a literal whose header is written, in pieces; then the items
        from `start` on, a step whenever STREAM_CHUNK octets are ready."""
        yield from self._stream(data)
        del data
        out = self._out
        line = bytearray()
        for part in parts[start:]:
            line += b" "
            if type(part) is bytes:
                line += part
                continue
            assert isinstance(part, _Deferred)
            try:
                data = part.make()
            except Exception:
                out += line
                self._end_broken(part)
                raise
            line += literal_head(part.label, data, part.binary)
            if len(data) > STREAM_MIN:
                out += line
                line = bytearray()
                yield from self._stream(data)
                continue
            line += data
            del data
            if len(line) >= STREAM_CHUNK:
                out += line
                line = bytearray()
                yield
        line += b")\r\n"
        out += line

    def _end_broken(self, part: _Deferred) -> None:
        """Making `part` failed (a bug) with its response begun: end the response well-formed, with an empty
        literal, before the error fails the command (NO [SERVERBUG]); never leave a response cut mid-way."""
        self._out += b"%b {0}\r\n)\r\n" % part.label

    def _renderer(self, sel: SelectedMailbox, item: FetchItem
                  ) -> Callable[[int, MessageRecord, bytes | None, Any], _Rendered]:
        """How to write `item` for one message: f(uid, record, raw or None, view or None) -> the item's bytes
        (made at once, before the response starts: metadata, so FLAGS is what `* FLAGS` announced, and the
        parsed structures, of which a command names each at most once), or a _Deferred literal."""
        name = item.name
        if name == "UID":
            return lambda u, rec, raw, view: b"UID %d" % u
        if name == "FLAGS":
            flags = sel.flags_item
            return lambda u, rec, raw, view: flags(u, rec)
        if name == "MODSEQ":
            return lambda u, rec, raw, view: b"MODSEQ (%d)" % (rec.modseq + MODSEQ_SHIFT)
        if name == "RFC822.SIZE":
            return lambda u, rec, raw, view: b"RFC822.SIZE %d" % rec.size
        if name == "EMAILID":
            return lambda u, rec, raw, view: b"EMAILID (%s)" % email_id(raw).encode()
        if name == "THREADID":
            return lambda u, rec, raw, view: b"THREADID NIL"
        if name == "INTERNALDATE":
            return lambda u, rec, raw, view: b'INTERNALDATE "%s"' % internal_date_text(rec.internaldate).encode()
        if name == "ENVELOPE":
            return lambda u, rec, raw, view: b"ENVELOPE " + view.envelope_bytes()
        if name == "BODYSTRUCTURE":
            return lambda u, rec, raw, view: b"BODYSTRUCTURE " + view.bodystructure_bytes(True)
        if name == "BODY":
            return lambda u, rec, raw, view: b"BODY " + view.bodystructure_bytes(False)
        if name == "RFC822":
            return lambda u, rec, raw, view: _Deferred(b"RFC822", lambda: raw)
        if name == "RFC822.HEADER":
            return lambda u, rec, raw, view: _Deferred(b"RFC822.HEADER",
                                                       lambda: memoryview(raw)[:_header_end(raw)])
        if name == "RFC822.TEXT":
            return lambda u, rec, raw, view: _Deferred(b"RFC822.TEXT", lambda: memoryview(raw)[_header_end(raw):])
        if name.startswith("BINARY"):
            return binary_renderer(item, _Deferred)
        section = item.section
        assert section is not None
        if _whole_message(item):
            kind = section.kind

            def data(raw: bytes, view) -> bytes | memoryview:
                if kind is None:
                    return raw
                if kind == "HEADER":
                    return memoryview(raw)[:_header_end(raw)]
                return memoryview(raw)[_header_end(raw):]  # a view: a 50 MB body is not copied to be sent
        else:
            def data(raw: bytes, view) -> bytes | memoryview:
                return view.section(section.part, section.kind, section.fields)
        label = section.label.encode()
        origin = item.origin
        if origin is not None:
            count = item.count
            head = b"BODY[%s]<%d>" % (label, origin)
            return lambda u, rec, raw, view: _Deferred(
                head, lambda: memoryview(data(raw, view))[origin:origin + count])
        head = b"BODY[%s]" % label
        return lambda u, rec, raw, view: _Deferred(head, lambda: data(raw, view))

    # -- STORE ------------------------------------------------------------------------------------------------
    def cmd_store(self, tag: str, lx: Lexer, uid: bool = False) -> Steps:
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
        return self._store_steps(tag, sel, idx, flags, mode, silent, unchanged_since, uid)

    def _store_steps(self, tag: str, sel: SelectedMailbox, idx: list[int], flags: list[str], mode: str,
                     silent: bool, unchanged_since: int | None, uid: bool) -> Steps:
        """Change the flags BATCH messages at a time, each batch's FETCH responses after it, then the tagged
        reply (MODIFIED lists every message UNCHANGEDSINCE refused, over all batches)."""
        store_since = None if unchanged_since is None else unchanged_since - MODSEQ_SHIFT
        failed: set[int] = set()
        for start in range(0, len(idx), BATCH):
            batch = idx[start:start + BATCH]
            targets = [sel.uids[i] for i in batch if sel.uids[i] not in sel.gone]
            if not targets:
                continue
            update = self.store.store_flags(self.user, sel.name, targets, flags, mode,  # type: ignore[arg-type]
                                            store_since, origin=self)
            failed.update(update.failed_modified)
            changed = {r.uid for r in update.changed}
            for r in (*update.changed, *update.unchanged):  # our own events may lag nothing, but be sure
                sel.note_record(r)
            out = self._out
            for i in batch:
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
                sel.flush_keywords(out)
                out += b"* %d FETCH (%b)\r\n" % (i + 1, b" ".join(parts))
            yield
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
    def cmd_copy(self, tag: str, lx: Lexer, uid: bool = False) -> Steps | None:
        return self._copy_or_move(tag, lx, uid, move=False)

    def cmd_move(self, tag: str, lx: Lexer, uid: bool = False) -> Steps | None:
        return self._copy_or_move(tag, lx, uid, move=True)

    def _copy_or_move(self, tag: str, lx: Lexer, uid: bool, move: bool) -> Steps | None:
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
            return None
        if not move:
            return self._copy_steps(tag, sel, info, targets)
        # MOVE stays one store call: it copies and expunges as one change to each mailbox (RFC 6851)
        pairs = self.store.move(self.user, sel.name, targets, info.name, origin=self)
        self._copied(tag, info, pairs, move)
        return None

    def _copy_steps(self, tag: str, sel: SelectedMailbox, info, targets: list[int]) -> Steps:
        """COPY in batches of at most COPY_BATCH messages or COPY_BATCH_BYTES octets; all or nothing: if it is cut
        short (a store error, the connection gone), the copies made so far are expunged again."""
        pairs: list[tuple[int, int]] = []
        done = False
        try:
            for batch in _batches(targets, sel.records):
                batch = [u for u in batch if u not in sel.gone]
                if batch:
                    pairs += self.store.copy(self.user, sel.name, batch, info.name, origin=self)
                yield
            done = True
        finally:
            if not done and pairs:
                self._take_back(info.name, [new for _, new in pairs])
        self._copied(tag, info, pairs, False)

    def _take_back(self, mailbox: str, uids: list[int]) -> None:
        try:
            self.store.expunge(self.user, mailbox, uids, origin=self)
        except StoreError as exc:  # the destination went away meanwhile: nothing left to take back
            log.info("IMAP %s: copies of an unfinished COPY not taken back: %s", self.peer, exc)

    def _copied(self, tag: str, info, pairs: list[tuple[int, int]], move: bool) -> None:
        verb = "Move" if move else "Copy"
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


def _itself(m: Msg) -> Msg:
    return m


def _no_view() -> Any:
    raise AssertionError("a record-only search key read the message")  # search.py _RECORD_KEYS is wrong


def _distinct(items: list[FetchItem]) -> list[FetchItem]:
    """Each item the response would show once (BODY[] and BODY.PEEK[] show alike), as Dovecot answers: a
    command naming the same item 5,000 times must not cost 5,000 copies of it."""
    seen: set[tuple] = set()
    out = []
    for item in items:
        key = (item.name, item.section, item.origin, item.count)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _whole_message(item: FetchItem) -> bool:
    """BODY[], BODY[HEADER] or BODY[TEXT] of the whole message: cut from the raw bytes, no parse needed."""
    section = item.section
    return (section is not None and not section.part and section.kind in (None, "HEADER", "TEXT")
            and not item.name.startswith("BINARY"))  # BINARY[] decodes the parts: it needs the tree


def _batches(uids: list[int], records: dict[int, MessageRecord]) -> Iterator[list[int]]:
    """`uids` cut into runs of at most COPY_BATCH messages and about COPY_BATCH_BYTES octets."""
    batch: list[int] = []
    size = 0
    for u in uids:
        batch.append(u)
        rec = records.get(u)
        size += rec.size if rec is not None else 0
        if len(batch) >= COPY_BATCH or size >= COPY_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


__all__ = ["MessageCommands", "FetchRequest"]
