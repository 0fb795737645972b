"""ESEARCH (RFC 4731), ESORT and CONTEXT=SEARCH (RFC 5267): `SEARCH RETURN (...)` / `SORT RETURN (...)`, the
`* ESEARCH` response, PARTIAL windows, and search contexts kept up to date (ADDTO / REMOVEFROM, CANCELUPDATE).

Why a module of its own: the plain SEARCH and SORT commands (message_commands.py) only choose the messages;
everything about how an extended result is written, and the live contexts a session keeps after the command,
lives here. A live context holds its compiled search predicate and the UIDs it currently matches; the session
notes which messages changed (flags, arrivals) and, whenever it tells the client of changes (before a tagged
reply, during IDLE), each context re-evaluates only those messages and reports the difference. An expunged
message's REMOVEFROM goes immediately before its own EXPUNGE line, with the number the message has at that
moment, so the client's numbering is right at every line.

Why bounded: a context costs a re-evaluation of every changed message (which may read the body) at every
update, so a session keeps at most `MAX_CONTEXTS` live contexts; a search beyond that still answers, with
an untagged `* NO [NOUPDATE "tag"]` warning (RFC 5267 4.2) instead of updates.

SAVE (RFC 5182 SEARCHRES) is not offered: `RETURN (SAVE)` is refused. CONTEXT=SORT is not offered either:
`SORT RETURN (UPDATE)` is refused; `SORT RETURN (PARTIAL ...)` works (windows over the sorted order).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..store.base import FlagsChanged, MessageAppended, NoSuchMessage, StoreError
from .errors import CommandFailed, ParseError
from .lexer import Lexer
from .search import Msg
from .selected import MODSEQ_SHIFT
from .seqset import compress
from .state import SessionCore

if TYPE_CHECKING:
    from .search import Pred, SearchProgram
    from .selected import SelectedMailbox

#: Live (UPDATE) search contexts one session may keep at once.
MAX_CONTEXTS = 16
#: The largest number a PARTIAL range may name (RFC 5267: a 32-bit nz-number).
MAX_PARTIAL = 0xFFFFFFFF
#: Tags one CANCELUPDATE may name.
MAX_CANCEL_TAGS = 100

_SIMPLE = frozenset({"MIN", "MAX", "ALL", "COUNT"})


@dataclass(frozen=True, slots=True)
class ReturnOptions:
    """What `RETURN (...)` asked for. `partial` is (low, high) with low <= high, 1-based positions."""

    min: bool = False
    max: bool = False
    all: bool = False
    count: bool = False
    update: bool = False
    partial: tuple[int, int] | None = None
    save: bool = False  # SEARCHRES (RFC 5182): keep the result as `$` (IMAP4rev2 sessions, rev2.py)

    @property
    def wants_result(self) -> bool:
        return self.min or self.max or self.all or self.count or self.partial is not None


def parse_partial_range(text: str) -> tuple[int, int]:
    """`low:high` (either order) of two nz-numbers up to 2^32-1; `*` and a single number are refused."""
    low_text, colon, high_text = text.partition(":")
    if not colon or not low_text.isdigit() or not high_text.isdigit() or not low_text.isascii() \
            or not high_text.isascii() or len(low_text) > 10 or len(high_text) > 10:
        raise ParseError(f"PARTIAL wants a range low:high of numbers, got {text[:30]!r}")
    low, high = int(low_text), int(high_text)
    if not (0 < low <= MAX_PARTIAL and 0 < high <= MAX_PARTIAL):
        raise ParseError(f"PARTIAL range numbers must be 1 to {MAX_PARTIAL}")
    return (low, high) if low <= high else (high, low)


def parse_return(lx: Lexer, sort: bool, save: bool = False) -> ReturnOptions | None:
    """`RETURN (opt ...)` followed by a space, at the lexer's position; None (nothing consumed) without one.

    `RETURN ()` means ALL (RFC 4731 3.1); CONTEXT is a hint and is accepted; an option named twice counts once
    (as in Dovecot), PARTIAL twice or with ALL is refused (RFC 5267 4.4). SAVE only with `save` (IMAP4rev2)."""
    start = lx.pos
    if lx.buf[start:start + 7].upper() != b"RETURN " and lx.buf[start:start + 7].upper() != b"RETURN(":
        return None
    lx.pos += 6
    lx.maybe_sp()
    if lx.peek() != 0x28:
        raise ParseError("RETURN wants a parenthesised list of options")
    names: set[str] = set()
    partial: tuple[int, int] | None = None
    seen_any = False

    def option() -> None:
        nonlocal partial, seen_any
        seen_any = True
        word = lx.atom("RETURN option").upper()
        if word in _SIMPLE:
            names.add(word)
        elif word == "PARTIAL":
            if partial is not None:
                raise ParseError("PARTIAL may be given only once")
            lx.sp()
            partial = parse_partial_range(lx.atom("PARTIAL range"))
        elif word == "UPDATE":
            if sort:
                raise ParseError("SORT RETURN (UPDATE) needs CONTEXT=SORT, which this server does not offer")
            names.add(word)
        elif word == "CONTEXT":
            pass
        elif word == "SAVE" and save:
            names.add(word)
        elif word == "SAVE":
            raise ParseError("RETURN (SAVE) needs SEARCHRES, which this server does not offer")
        else:
            raise ParseError(f"unknown RETURN option {word[:20]}")

    lx.paren_list(option)
    lx.sp()
    if partial is not None and "ALL" in names:
        raise ParseError("PARTIAL and ALL cannot be used together")
    if not seen_any:
        names.add("ALL")
    return ReturnOptions(min="MIN" in names, max="MAX" in names, all="ALL" in names, count="COUNT" in names,
                         update="UPDATE" in names, partial=partial, save="SAVE" in names)


def sequence_set(numbers: Sequence[int], ordered: bool) -> str:
    """A result as a sequence-set: ascending and compressed for SEARCH; for an ordered (SORT) result, in its
    order, where `a:b` stands only for a run a, a+1, ..., b (as Dovecot writes it)."""
    if not ordered:
        return compress(numbers)
    out: list[str] = []
    i, n = 0, len(numbers)
    while i < n:
        j = i
        while j + 1 < n and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(out)


def esearch_line(tag: str, uid: bool, opts: ReturnOptions, hits: Sequence[int], ordered: bool = False,
                 modseq: int | None = None) -> bytes:
    """`* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [ALL set] [PARTIAL (range set|NIL)] [COUNT n] [MODSEQ n]`.

    `hits` are message numbers or UIDs in result order (ascending for SEARCH, the sort order for SORT); MIN and
    MAX are the first and last of that order; MIN, MAX and ALL are left out when nothing matched (RFC 4731),
    COUNT never is. `modseq` (already on the wire's scale) is written only when something is returned."""
    parts = [f'* ESEARCH (TAG "{tag}")']
    if uid:
        parts.append("UID")
    returned = False
    if hits and opts.min:
        parts.append(f"MIN {hits[0]}")
        returned = True
    if hits and opts.max:
        parts.append(f"MAX {hits[-1]}")
        returned = True
    if hits and opts.all:
        parts.append(f"ALL {sequence_set(hits, ordered)}")
        returned = True
    if opts.partial is not None:
        low, high = opts.partial
        window = hits[low - 1:high]
        parts.append(f"PARTIAL ({low}:{high} {sequence_set(window, ordered) if window else 'NIL'})")
        returned = returned or bool(window)
    if opts.count:
        parts.append(f"COUNT {len(hits)}")
        returned = returned or bool(hits)
    if modseq is not None and returned:
        parts.append(f"MODSEQ {modseq}")
    return (" ".join(parts) + "\r\n").encode()


def result_modseq(opts: ReturnOptions, matches: Sequence[Msg]) -> int | None:
    """RFC 7162 3.1.5 for ESEARCH: with only MIN and/or MAX asked, the highest mod-sequence of the messages
    returned; otherwise that of every message matched. None when nothing matched."""
    if not matches:
        return None
    if (opts.min or opts.max) and not (opts.all or opts.count or opts.partial is not None):
        chosen = ([matches[0]] if opts.min else []) + ([matches[-1]] if opts.max else [])
    else:
        chosen = list(matches)
    return max(m.record.modseq for m in chosen) + MODSEQ_SHIFT


# -- live contexts -------------------------------------------------------------------------------------------
@dataclass(slots=True)
class SearchContext:
    """One `SEARCH RETURN (UPDATE)`: its tag, whether it speaks UIDs, its predicate and what it matches."""

    tag: str
    uid: bool
    pred: Pred
    result: set[int] = field(default_factory=set)  # UIDs

    def line(self, verb: str, numbers: Iterable[int]) -> bytes:
        uid = " UID" if self.uid else ""
        return f'* ESEARCH (TAG "{self.tag}"){uid} {verb} (0 {compress(numbers)})\r\n'.encode()


class SearchContexts:
    """The live contexts of one session, for one selected mailbox (another selection drops them all)."""

    def __init__(self, limit: int = MAX_CONTEXTS) -> None:
        self.limit = limit
        self.view: SelectedMailbox | None = None
        self.live: dict[str, SearchContext] = {}
        self.dirty: set[int] = set()  # UIDs whose flags changed or that arrived since the last update

    def _bind(self, sel: SelectedMailbox | None) -> None:
        if self.view is not sel:
            self.view = sel
            self.live.clear()
            self.dirty.clear()

    def add(self, sel: SelectedMailbox, ctx: SearchContext) -> bool:
        """Keep `ctx` up to date from now on; False when the session already keeps `limit` others."""
        self._bind(sel)
        if ctx.tag not in self.live and len(self.live) >= self.limit:
            return False
        self.live[ctx.tag] = ctx
        return True

    def cancel(self, sel: SelectedMailbox | None, tags: Sequence[str]) -> list[str]:
        """Stop the contexts named; returns the tags that name none (then nothing is stopped)."""
        self._bind(sel)
        unknown = [t for t in tags if t not in self.live]
        if not unknown:
            for t in tags:
                self.live.pop(t, None)
        return unknown

    def note(self, event: object) -> None:
        """A store event on the selected mailbox (after the view recorded it)."""
        if self.live and isinstance(event, FlagsChanged | MessageAppended):
            self.dirty.add(event.record.uid)

    def touch(self, uids: Sequence[int]) -> None:
        """Messages that changed earlier but reach the view only now (NOTIFY held them back, notify.py)."""
        if self.live:
            self.dirty.update(uids)

    def removal(self, uid: int, seq: int) -> bytes:
        """REMOVEFROM lines for a message about to be announced expunged, numbered as it is at that moment."""
        out = b""
        for ctx in self.live.values():
            if uid in ctx.result:
                ctx.result.discard(uid)
                out += ctx.line("REMOVEFROM", (uid if ctx.uid else seq,))
        return out

    def updates(self, sel: SelectedMailbox, make_msg: Callable[[int, int], Msg]) -> bytes:
        """ADDTO / REMOVEFROM lines for the messages changed since the last call, in the client's current
        numbering (call after the view's own updates were written)."""
        self._bind(sel)
        if not self.live or not self.dirty:
            self.dirty.clear()
            return b""
        changed = sorted(self.dirty)
        self.dirty.clear()
        msgs: list[Msg] = []
        for uid in changed:
            if uid in sel.gone:  # its REMOVEFROM goes with its EXPUNGE
                continue
            seq = sel.seq_of(uid)
            if seq is not None:
                msgs.append(make_msg(seq, uid))
        out = bytearray()
        for ctx in self.live.values():
            added: list[int] = []
            removed: list[int] = []
            for m in msgs:
                try:
                    now = bool(ctx.pred(m))
                except (NoSuchMessage, StoreError):
                    now = False
                if now and m.uid not in ctx.result:
                    ctx.result.add(m.uid)
                    added.append(m.uid if ctx.uid else m.seq)
                elif not now and m.uid in ctx.result:
                    ctx.result.discard(m.uid)
                    removed.append(m.uid if ctx.uid else m.seq)
            if removed:
                out += ctx.line("REMOVEFROM", removed)
            if added:
                out += ctx.line("ADDTO", added)
        return bytes(out)


class SearchContextCommands(SessionCore):
    """The session side: extended SEARCH/SORT replies, CANCELUPDATE, and the hooks session.py calls."""

    _search_contexts: SearchContexts | None = None

    if TYPE_CHECKING:
        def _matches(self, sel: SelectedMailbox, prog: SearchProgram) -> Generator[None, None, list[Msg]]: ...

        def _view(self, sel: SelectedMailbox, uid: int) -> Any: ...

    def _contexts(self) -> SearchContexts:
        if self._search_contexts is None:
            self._search_contexts = SearchContexts()
        return self._search_contexts

    def _esearch_steps(self, tag: str, sel: SelectedMailbox, prog: SearchProgram, uid: bool,
                       opts: ReturnOptions) -> Generator[None, None, None]:
        """SEARCH RETURN (...): the matching messages (in steps), then one ESEARCH line."""
        matches = yield from self._matches(sel, prog)
        self.esearch_reply(tag, sel, prog, uid, opts, matches)
        self.ok(tag, "Search completed.", "SEARCH")

    def esearch_reply(self, tag: str, sel: SelectedMailbox, prog: SearchProgram, uid: bool, opts: ReturnOptions,
                      matches: Sequence[Msg], ordered: bool = False) -> None:
        """Write the ESEARCH line of a finished SEARCH or SORT (`matches` in result order) and, for UPDATE,
        start keeping its context."""
        hits = [m.uid if uid else m.seq for m in matches]
        modseq = result_modseq(opts, matches) if prog.uses_modseq else None
        if opts.save:  # RFC 5182 2.1: with only MIN/MAX, `$` is those; otherwise every match
            kept = list(matches)
            if matches and (opts.min or opts.max) and not (opts.all or opts.count or opts.partial is not None):
                kept = ([matches[0]] if opts.min else []) + ([matches[-1]] if opts.max else [])
            self.save_result(m.uid for m in kept)  # type: ignore[attr-defined]  # rev2.py
            if not (opts.wants_result or opts.update):  # RETURN (SAVE) alone: no ESEARCH line
                return
        self._write(esearch_line(tag, uid, opts, hits, ordered, modseq))
        if opts.update:
            ctx = SearchContext(tag, uid, prog.pred, {m.uid for m in matches})
            if not self._contexts().add(sel, ctx):
                self._write(f'* NO [NOUPDATE "{tag}"] Too many search contexts (at most '
                            f'{self._contexts().limit}); this one is not updated\r\n'.encode())

    def cmd_cancelupdate(self, tag: str, lx: Lexer) -> None:
        """CANCELUPDATE "tag" ... (RFC 5267 4.3): stop updating those contexts."""
        tags: list[str] = []
        while lx.maybe_sp():
            if len(tags) >= MAX_CANCEL_TAGS:
                raise ParseError(f"too many tags (at most {MAX_CANCEL_TAGS})")
            tags.append(lx.string())
        lx.end()
        if not tags:
            raise ParseError("CANCELUPDATE needs the tag of a search")
        unknown = self._contexts().cancel(self.selected, tags)
        if unknown:
            raise CommandFailed(f"Unknown tag {unknown[0][:40]!r}: no search with updates has it")
        self.ok(tag, "Updates cancelled.")

    # -- hooks for session.py --------------------------------------------------------------------------------
    def search_contexts_note(self, event: object) -> None:
        """A store event on the selected mailbox: remember the message for the next update."""
        if self._search_contexts is not None:
            self._search_contexts.note(event)

    def search_contexts_touch(self, uids: Sequence[int]) -> None:
        """Held changes released into the selected view: their messages are looked at by the next update."""
        if self._search_contexts is not None:
            self._search_contexts.touch(uids)

    def search_context_removal(self) -> Callable[[int, int], bytes] | None:
        """What the selected view calls before announcing each expunge (None: no live context)."""
        contexts = self._search_contexts
        if contexts is None or not contexts.live or contexts.view is not self.selected:
            return None
        return contexts.removal

    def search_context_updates(self, sel: SelectedMailbox) -> None:
        """After the view's updates: ADDTO/REMOVEFROM for the messages that changed."""
        contexts = self._search_contexts
        if contexts is None or (not contexts.live and contexts.view is sel):
            return

        def make_msg(seq: int, uid: int) -> Msg:
            return Msg(seq, uid, sel.records[uid], uid in sel.recent, lambda: self._view(sel, uid))

        self._write(contexts.updates(sel, make_msg))
