"""One message as IMAP FETCH and SEARCH see it: ENVELOPE, BODYSTRUCTURE, BODY[section], search text.

Why a view object: the IMAP server asks many questions of the same raw bytes (FETCH of a header, then a
SEARCH, then a BODYSTRUCTURE). MessageView parses lazily and remembers: the top header's extent is found
with two `bytes.find` calls (that is all `BODY.PEEK[HEADER]` of a whole mailbox needs); the MIME tree is
built only for part sections and BODYSTRUCTURE; text decoding only for SEARCH.

Sections are exact slices of the raw bytes (CRLF or LF kept as stored; only NUL goes out as 0x80, as in
Dovecot). ENVELOPE, BODYSTRUCTURE and the section rules match what Dovecot 2.3 answers for the same
message (tests/imap/test_message_view_dovecot.py checks that), except that sizes and line counts are those
of the stored bytes (Dovecot counts LF-only lines as if they ended in CRLF).
Values follow fake_servers/imap/values.py: None -> NIL, str -> string, bytes -> literal (used for
header bytes that are not UTF-8), lists -> parenthesised lists.

Why every cost is bounded (a message is hostile input): the tree is built within MimeLimits (tree.py:
part count, depth, indexed header fields, boundary search), the char-by-char parsers of structured values
(addresses, Content-*) and RFC 2047 decoding read at most `max_value_bytes` per ENVELOPE, per part or per
SEARCH call, line counts are summed child by child (each byte is counted once, however deep the nesting),
and ENVELOPE, BODYSTRUCTURE and the search text are computed once per view and remembered (a view lives in
the server's ViewCache, whose budget counts what a view holds: `weight`). Even bounded, the structure of a
message of 10,000 parts takes a few hundred milliseconds of Python: `prepare` does that work in steps of a
few milliseconds, so a server can serve other clients in between instead of stalling them.
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Callable, Generator, Iterable, Iterator
from email.utils import parsedate_to_datetime

from recall_lab.fake_servers.imap.mime.rfc822 import (
    Address,
    parse_addresses,
    parse_content_type,
    parse_disposition,
    parse_languages,
    parse_token_value,
)
from recall_lab.fake_servers.imap.mime.text import decode_body, decode_words, unfold
from recall_lab.fake_servers.imap.mime.tree import (
    DEFAULT_LIMITS,
    STEP_WORK,
    HeaderField,
    MimeLimits,
    Part,
    find_steps,
    header_fields_steps,
    parse_steps,
    run_steps,
)
from recall_lab.fake_servers.imap.serialise import serialise
from recall_lab.fake_servers.imap.values import ImapValue

__all__ = ["MessageView"]

_ENVELOPE_STRINGS = ("date", "subject", "in-reply-to", "message-id")
_ENVELOPE_ADDRESSES = ("from", "sender", "reply-to", "to", "cc", "bcc")
_STRUCTURE_KEYS = {True: "bodystructure_bytes", False: "body_bytes"}
#: Where a message/global part may be: "global" anywhere in the bytes (any case; a cheap first test).
_GLOBAL = re.compile(rb"[Gg][Ll][Oo][Bb][Aa][Ll]")


def _has_global(root: Part) -> bool:
    """Whether the tree has a message/global part (parsed as a leaf: its children are not there to count)."""
    todo = [root]
    while todo:
        p = todo.pop()
        if p.content_type == "message/global":
            return True
        todo.extend(p.children)
    return False


def _out(text: str) -> str | bytes:
    """A str for the value model, or the raw bytes when they were not valid UTF-8 (a literal)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _nolf(text: str) -> str | bytes:
    return _out(text.replace("\r", "").replace("\n", ""))


def _for_humans(text: str) -> str | bytes:
    """Dovecot's cleanup of subjects and display names: no CR/LF, NUL -> U+FFFD, blanks collapsed, trimmed."""
    text = text.replace("\r", "").replace("\n", "").replace("\x00", "\ufffd")
    if "\t" in text or "  " in text or text[:1] == " " or text[-1:] == " ":
        text = " ".join(w for w in text.replace("\t", " ").split(" ") if w)
    return _out(text)


class _PartData:
    """The Content-* facts of one part, as Dovecot keeps them (first occurrence of each header wins)."""

    __slots__ = ("type", "subtype", "params", "id", "description", "encoding", "disposition",
                 "disposition_params", "md5", "language", "location")

    def __init__(self) -> None:
        self.type: str | None = None
        self.subtype: str | None = None
        self.params: list[tuple[str, str]] = []
        self.id: str | None = None
        self.description: str | None = None
        self.encoding: str | None = None
        self.disposition: str | None = None
        self.disposition_params: list[tuple[str, str]] | None = None
        self.md5: str | None = None
        self.language: list[str] | None = None
        self.location: str | None = None


#: What one Part / HeaderField costs in memory, roughly (for ViewCache's budget).
_PART_BYTES = 600
_FIELD_BYTES = 200
_CHARS_PER_UNIT = 128  # header characters rendered per unit of work (STEP_WORK units make one step)
_TEXT_BYTES_PER_UNIT = 64 << 10  # body bytes decoded per unit of work

#: What prepare() can make ready ahead: FETCH items, "TREE" (what part sections need) and "TEXT" (SEARCH
#: BODY and TEXT: the decoded text of the message).
PREPARABLE = frozenset({"TREE", "BODYSTRUCTURE", "BODY", "ENVELOPE", "TEXT"})


class MessageView:
    """Read-only IMAP views of one raw message. Cheap to create; everything is computed on first use.

    Every method answers in one go. For a message whose structure is big (up to MimeLimits), `prepare`
    does the same work in steps, so a server can let other clients in between; afterwards the answers
    are ready and cheap.
    """

    __slots__ = ("raw", "limits", "_tree", "_top", "_top_fields", "_top_fields_end", "_data_cache", "_memo",
                 "_parts", "_fields_seen", "_on_grow", "_weighed", "global_messages", "_rev2")

    def __init__(self, raw: bytes, limits: MimeLimits = DEFAULT_LIMITS,
                 on_grow: Callable[[int], None] | None = None, global_messages: bool = False) -> None:
        """`on_grow(delta)` is told each time the view's weight changes (a cache keeps its budget with it).
        `global_messages`: message/global parts are encapsulated messages (IMAP4rev2; see rev2_steps)."""
        self.raw = bytes(raw)
        self.limits = limits
        self.global_messages = global_messages
        self._rev2: MessageView | None = None
        self._on_grow = on_grow
        self._tree: Part | None = None
        self._top: tuple[int, int] | None = None
        self._top_fields: list[HeaderField] | None = None
        self._top_fields_end = 0
        self._data_cache: dict[int, _PartData] = {}
        self._memo: dict[str, ImapValue] = {}  # remembered answers (bytes, str or values)
        self._parts = 0
        self._fields_seen = 0
        self._weighed = self.weight

    def _grew(self) -> None:
        weight = self.weight
        if weight != self._weighed:
            delta, self._weighed = weight - self._weighed, weight
            if self._on_grow is not None:
                self._on_grow(delta)

    @property
    def weight(self) -> int:
        """Roughly how many bytes this view keeps alive (the raw message, the tree, remembered answers)."""
        memo = sum(sys.getsizeof(v) for v in self._memo.values() if isinstance(v, bytes | str))
        return len(self.raw) + memo + self._fields_seen * _FIELD_BYTES + self._parts * _PART_BYTES

    @property
    def exceeded(self) -> str | None:
        """Which MimeLimits the message's structure exceeded (it is rendered truncated), or None."""
        return self.tree.exceeded

    def prepare(self, items: Iterable[str] = ("TREE",)) -> Iterator[None]:
        """Compute what `items` (names from PREPARABLE; others are ignored) will need, yielding after each
        bounded step (a few ms: STEP_WORK parts). A server drives it between other clients' work, e.g.
        `for _ in view.prepare(["BODYSTRUCTURE"]): yield`; then `bodystructure_bytes()` answers at once."""
        wanted = set(items)
        if wanted & {"TREE", "BODYSTRUCTURE", "BODY"} and self._tree is None:
            tree = yield from parse_steps(self.raw, self.limits, global_messages=self.global_messages)
            if self._tree is None:
                self._set_tree(tree)
        for extended, name in ((True, "BODYSTRUCTURE"), (False, "BODY")):
            key = _STRUCTURE_KEYS[extended]
            if name in wanted and key not in self._memo:
                out = bytearray()
                yield from self._write_structure(extended, out)
                self._memo[key] = bytes(out)
                self._grew()
        if "ENVELOPE" in wanted:
            yield from self._fields_steps()
            self.envelope_bytes()
        if "TEXT" in wanted and "text" not in self._memo:
            yield from self._text_steps()

    def rev2_steps(self) -> Generator[None, None, MessageView]:
        """The view an IMAP4rev2 session answers from: this one, unless the message has a message/global part.

        Why two views of one message: RFC 9051 describes message/global like message/rfc822 (envelope, body,
        lines; sections such as 2.HEADER go inside it), while IMAP4rev1's grammar allows only a basic body
        for it (and Dovecot 2.3 answers that in every session). A message holding one gets a second view,
        made once and kept here (its growth counted in the same cache budget); every other message is
        answered by this view, after one C-speed search for "global" in its bytes."""
        if self._rev2 is None:
            rev2 = self
            if not self.global_messages and _GLOBAL.search(self.raw) is not None:
                if self._tree is None:
                    tree = yield from parse_steps(self.raw, self.limits)
                    if self._tree is None:
                        self._set_tree(tree)
                if _has_global(self.tree):
                    rev2 = MessageView(self.raw, self.limits, self._on_grow, global_messages=True)
            self._rev2 = rev2
        return self._rev2

    # --- lazy structure -----------------------------------------------------------------------------
    def _top_header(self) -> tuple[int, int]:
        """(end of header bytes, start of body) of the whole message, without building the tree."""
        if self._top is None:
            run_steps(self._top_steps())
        assert self._top is not None
        return self._top

    def _top_steps(self) -> Generator[None, None, None]:
        if self._top is not None:
            return
        raw = self.raw
        if raw.startswith(b"\n"):
            top = (0, 1)
        elif raw.startswith(b"\r\n"):
            top = (0, 2)
        else:
            b = yield from find_steps(raw, b"\n\r\n", 0, len(raw))
            a = yield from find_steps(raw, b"\n\n", 0, b + 2 if b >= 0 else len(raw))  # only before that one
            if a < 0 and b < 0:
                top = (len(raw), len(raw))
            elif b < 0 or (0 <= a < b):
                top = (a + 1, a + 2)
            else:
                top = (b + 1, b + 3)
        self._top = top

    def _fields(self) -> list[HeaderField]:
        """The top header's indexed fields: the same as the tree's root has (the root is the first header the
        tree indexes, with the whole budget), without building the tree."""
        if self._top_fields is None:
            run_steps(self._fields_steps())
        assert self._top_fields is not None
        return self._top_fields

    def _fields_steps(self) -> Generator[None, None, None]:
        if self._top_fields is not None:
            return
        yield from self._top_steps()
        end, _ = self._top_header()
        lim = self.limits
        fields, stop = yield from header_fields_steps(self.raw, 0, end, lim.max_header_fields, lim.max_header_bytes)
        if self._top_fields is None:  # (the tree may have been built meanwhile: it sets them too)
            self._top_fields, self._top_fields_end = fields, stop
            self._fields_seen += len(fields)
            self._grew()

    @property
    def tree(self) -> Part:
        if self._tree is None:
            self._set_tree(run_steps(parse_steps(self.raw, self.limits, global_messages=self.global_messages)))
        assert self._tree is not None
        return self._tree

    def _set_tree(self, root: Part) -> None:
        """Keep the tree, counting its parts and indexed fields for `weight`."""
        parts = fields = 0
        todo = [root]
        while todo:
            p = todo.pop()
            parts += 1
            fields += len(p.fields or ())
            todo.extend(p.children)
        self._parts = parts
        self._fields_seen = fields
        self._tree = root
        self._top_fields, self._top_fields_end = root.fields or [], root.fields_end  # the same fields: one list
        self._grew()

    def _part_fields(self, part: Part) -> list[HeaderField]:
        if part.fields is None:  # only the empty message of a cut-short message/rfc822 part
            part.fields = []
            part.fields_end = part.start
        return part.fields

    def _structured(self, f: HeaderField, budget: list[int]) -> str:
        """A structured value (addresses, Content-Type...) for the char-by-char parsers: at most what is left
        of `budget` (bytes, shared by the values of one ENVELOPE or one part), which it spends."""
        size = min(f.end - f.value_start, budget[0])
        budget[0] -= size
        return self._value(f, f.value_start + size)

    def _value(self, f: HeaderField, end: int | None = None) -> str:
        """A field's full value (or up to `end`) as Dovecot reads it: leading blanks skipped, line ends kept."""
        raw = self.raw
        start = f.value_start
        end = f.end if end is None else end
        if end > start and raw[end - 1] == 10:
            end -= 1
            if end > start and raw[end - 1] == 13:
                end -= 1
        value = raw[start:end]
        stripped = value.lstrip(b" \t")
        if stripped[:1] in (b"\r", b"\n") or not stripped:
            # the first line is all blanks: Dovecot skips just one
            value = value[1:] if value[:1] in (b" ", b"\t") else value
        else:
            value = stripped
        return value.decode("utf-8", "surrogateescape")

    # --- ENVELOPE -----------------------------------------------------------------------------------
    def envelope(self) -> ImapValue:
        """RFC 3501 ENVELOPE of the whole message (computed once)."""
        env = self._memo.get("envelope")
        if env is None:
            env = self._memo["envelope"] = self._envelope_of(self._fields())
        return env  # type: ignore[return-value]

    def envelope_bytes(self) -> bytes:
        """ENVELOPE as it goes on the wire, serialised once."""
        data = self._memo.get("envelope_bytes")
        if data is None:
            data = self._memo["envelope_bytes"] = serialise(self.envelope())
            self._grew()
        return data  # type: ignore[return-value]

    def _envelope_of(self, fields: list[HeaderField]) -> list[ImapValue]:
        strings: dict[str, str] = {}
        addrs: dict[str, list[Address]] = {}
        budget = [self.limits.max_value_bytes]  # address text parsed for this envelope, all fields together
        for f in fields:
            name = f.name
            if name in _ENVELOPE_STRINGS:
                strings[name] = self._value(f)
            elif name in _ENVELOPE_ADDRESSES and budget[0] > 0:
                found = parse_addresses(self._structured(f, budget))
                if found:
                    addrs.setdefault(name, []).extend(found)

        def s(name: str) -> ImapValue:
            v = strings.get(name)
            return None if v is None else _nolf(v)

        def a(name: str, fallback: str | None = None) -> ImapValue:
            lst = addrs.get(name)
            if lst is None and fallback is not None:
                lst = addrs.get(fallback)
            if not lst:
                return None
            return [[None if x.name is None else _for_humans(x.name),
                     None if x.route is None else _out(x.route),
                     None if x.mailbox is None else _out(x.mailbox),
                     None if x.domain is None else _out(x.domain)] for x in lst]

        subject = strings.get("subject")
        return [
            s("date"),
            None if subject is None else _for_humans(subject),
            a("from"), a("sender", "from"), a("reply-to", "from"),
            a("to"), a("cc"), a("bcc"),
            s("in-reply-to"), s("message-id"),
        ]

    # --- BODYSTRUCTURE ------------------------------------------------------------------------------
    def _data(self, part: Part) -> _PartData:
        key = id(part)  # parts live as long as the tree, so their ids are stable keys
        d = self._data_cache.get(key)
        if d is not None:
            return d
        d = _PartData()
        budget = [self.limits.max_value_bytes]  # structured Content-* text parsed for this part
        if part.mime:
            for f in self._part_fields(part):
                name = f.name
                if not name.startswith("content-"):
                    continue
                sub = name[8:]
                if sub == "type" and d.type is None:
                    ct = parse_content_type(self._structured(f, budget))
                    d.type = ct.type
                    d.subtype = ct.subtype if ct.subtype is not None else ""
                    d.params = ct.params
                elif sub == "transfer-encoding" and d.encoding is None:
                    d.encoding = parse_token_value(self._structured(f, budget))
                elif sub == "id" and d.id is None:
                    d.id = self._value(f)
                elif sub == "description" and d.description is None:
                    d.description = self._value(f)
                elif sub == "md5" and d.md5 is None:
                    d.md5 = self._value(f)
                elif sub == "location" and d.location is None:
                    d.location = self._value(f)
                elif sub == "language" and d.language is None:
                    d.language = parse_languages(self._structured(f, budget))
                elif sub == "disposition" and d.disposition_params is None:
                    disp, params = parse_disposition(self._structured(f, budget))
                    d.disposition = disp
                    d.disposition_params = params or None
        self._data_cache[key] = d
        return d

    @staticmethod
    def _params(params: list[tuple[str, str]], default_charset: bool) -> ImapValue:
        if not params and not default_charset:
            return None
        out: list[ImapValue] = []
        seen_charset = False
        for k, v in params:
            if k.lower() == "charset":
                seen_charset = True
            out.append(_out(k))
            out.append(_out(v))
        if default_charset and not seen_charset:
            out += ["charset", "us-ascii"]
        return out

    def _ext_common(self, d: _PartData) -> list[ImapValue]:
        disp: ImapValue = None
        if d.disposition is not None:
            disp = [_out(d.disposition), self._params(d.disposition_params or [], False)]
        lang: ImapValue = None if d.language is None else [_out(x) for x in d.language]
        loc: ImapValue = None if d.location is None else _nolf(d.location)
        return [disp, lang, loc]

    def bodystructure_bytes(self, extended: bool = True) -> bytes:
        """BODYSTRUCTURE (extended) or BODY as it goes on the wire: the bytes serialise() writes for
        bodystructure(), built part by part and remembered (the value model of 10,000 parts would weigh ten
        times more than its bytes)."""
        key = _STRUCTURE_KEYS[extended]
        data = self._memo.get(key)
        if not isinstance(data, bytes):
            out = bytearray()
            run_steps(self._write_structure(extended, out))
            data = self._memo[key] = bytes(out)
            self._grew()
        return data

    def bodystructure(self, extended: bool = True) -> ImapValue:
        """RFC 3501 BODYSTRUCTURE (extended) or BODY (extended=False) of the whole message, as a value."""
        root = self.tree
        plain = self._plain_root(root, extended)
        return plain if plain is not None else self._structure(root, extended)

    def _plain_root(self, root: Part, extended: bool) -> list[ImapValue] | None:
        if root.kind == "leaf" and not root.truncated and self._plain_7bit(self._data(root)):
            # Dovecot recognises a plain us-ascii 7bit message and answers its canonical form
            # (lowercase "7bit" and charset whatever case the header used)
            out: list[ImapValue] = ["text", "plain", ["charset", "us-ascii"], None, None, "7bit",
                                    root.end - root.body_start, self._lines(root)]
            return out + [None, None, None, None] if extended else out
        return None

    def _write_structure(self, extended: bool, out: bytearray) -> Generator[None, None, None]:
        """Serialise the structure into `out` part by part, yielding every STEP_WORK parts: the same bytes as
        serialise(bodystructure()), since a list is written as "(" items joined by " " ")"."""
        root = self.tree
        plain = self._plain_root(root, extended)
        if plain is not None:
            out += serialise(plain)
            return
        done = 0
        # depth-first, without recursion: (the part's items after its children, children still to write)
        todo: list[tuple[list[ImapValue], Iterator[Part]]] = []
        part: Part | None = root
        while True:
            if part is not None:
                before, children, after = self._shape(part, extended)
                # a unit per part, more for a big header (its Content-* values, or a message's envelope)
                done += 1 + min(part.fields_end - part.start, self.limits.max_value_bytes) // _CHARS_PER_UNIT
                if done >= STEP_WORK:
                    done = 0
                    yield
                if not children:
                    out += serialise(before + after)
                    part = None
                else:
                    out += b"("
                    for item in before:
                        out += serialise(item)
                        out += b" "
                    todo.append((after, iter(children)))
                    part = None
            if not todo:
                return
            after, rest = todo[-1]
            nxt = next(rest, None)
            if nxt is not None:
                if out[-1:] != b"(" and out[-1:] != b" ":
                    out += b" "
                part = nxt
                continue
            todo.pop()
            for item in after:
                out += b" "
                out += serialise(item)
            out += b")"

    def _shape(self, part: Part, extended: bool) -> tuple[list[ImapValue], list[Part], list[ImapValue]]:
        """One part's BODYSTRUCTURE list, split around its children: (items before them, the child parts,
        items after them). A leaf has no children; a multipart's children come first; a message/rfc822 part
        has its envelope before and its line count after the encapsulated message."""
        d = self._data(part)
        if part.kind == "multipart":
            before: list[ImapValue] = []
            if not part.children:
                empty: list[ImapValue] = ["text", "plain", ["charset", "us-ascii"], None, None, "7bit", 0, 0]
                if extended:
                    empty += [None, None, None, None]
                before.append(empty)
            after: list[ImapValue] = [_out(d.subtype or "")]
            if extended:
                after.append(self._params(d.params, False))
                after += self._ext_common(d)
            return before, part.children, after
        if part.kind == "message":
            out: list[ImapValue] = ["message", "global" if part.content_type == "message/global" else "rfc822"]
            text = False
        elif self._opaque(part, d):
            out = ["application", "octet-stream"]
            text = False
        elif d.type is None:
            out = ["text", "plain"]
            text = True
        else:
            out = [_out(d.type), _out(d.subtype or "")]
            text = d.type.lower() == "text"
        out.append(self._params(d.params, text))
        out.append(None if d.id is None else _nolf(d.id))
        out.append(None if d.description is None else _nolf(d.description))
        out.append(_out(d.encoding) if d.encoding is not None else "7bit")
        out.append(part.end - part.body_start)
        tail: list[ImapValue] = []
        children: list[Part] = []
        if text:
            out.append(self._lines(part))
        elif part.kind == "message":
            child = part.children[0]
            out.append(self._envelope_of(self._part_fields(child)))
            children = [child]
            tail.append(self._lines(part))
        if extended:
            tail.append(None if d.md5 is None else _nolf(d.md5))
            tail += self._ext_common(d)
        if not children:
            return out + tail, children, []
        return out, children, tail

    def _opaque(self, part: Part, d: _PartData) -> bool:
        """A leaf whose type says it has structure that was not parsed: a multipart or message/rfc822 part a
        limit kept us from entering, a "multipart" without a subtype, a digest entry past the limits. Dovecot
        reports such a "truncated" part as application/octet-stream (keeping its parameters), not as what its
        header says, since a client would look inside it for parts that are not there."""
        if part.truncated:
            return True
        if d.type is None:
            return part.in_digest
        kind = d.type.lower()
        sub = (d.subtype or "").lower()
        return kind == "multipart" or (kind == "message" and (sub == "rfc822"
                                                              or (sub == "global" and self.global_messages)))

    def _structure(self, part: Part, extended: bool) -> list[ImapValue]:
        """The value model of one part (recursive: nesting is bounded by MimeLimits.max_depth)."""
        before, children, after = self._shape(part, extended)
        return before + [self._structure(c, extended) for c in children] + after

    def _lines(self, part: Part) -> int:
        """LF count of the part's body: the children's counts plus the bytes between them, so each byte of
        the message is counted once however deeply parts nest (and remembered on the part)."""
        if part.lines < 0:
            raw = self.raw
            pos = part.body_start
            total = 0
            for child in part.children:
                total += raw.count(b"\n", pos, child.body_start) + self._lines(child)
                pos = max(pos, child.end)
            part.lines = total + raw.count(b"\n", pos, part.end)
        return part.lines

    @staticmethod
    def _plain_7bit(d: _PartData) -> bool:
        if d.type is not None and (d.type.lower() != "text" or (d.subtype or "").lower() != "plain"):
            return False
        if len(d.params) > 1 or (d.params and (d.params[0][0].lower() != "charset"
                                               or d.params[0][1].lower() != "us-ascii")):
            return False
        if d.encoding is not None and d.encoding.lower() != "7bit":
            return False
        return (d.id is None and d.description is None and d.md5 is None and d.disposition is None
                and d.language is None and d.location is None)

    # --- BODY[section] ------------------------------------------------------------------------------
    def _find(self, path: tuple[int, ...]) -> Part | None:
        """The part a section path names, by Dovecot's rules: a non-multipart part is its own "1"
        (so BODY[1] of a top-level message/rfc822 is the whole encapsulated message), a path may only
        go deeper through multiparts and message/rfc822 parts, and a message/rfc822 part reached by
        the path is entered before the next number is applied."""
        part: Part | None = self.tree
        last = len(path) - 1
        for i, num in enumerate(path):
            if part is None or num < 1:
                return None
            if i > 0 and part.kind == "message" and part.children:
                part = part.children[0]
            if part.kind == "multipart":
                part = part.children[num - 1] if num <= len(part.children) else None
            elif num != 1 or (i < last and part.kind != "message"):
                return None
        return part

    def part_at(self, path: tuple[int, ...]) -> Part | None:
        """The part a section path names (the rules of BODY[path]), or None; () is the whole message."""
        return self.tree if not path else self._find(path)

    def section(self, part: tuple[int, ...], kind: str | None, fields: tuple[str, ...] = ()) -> bytes:
        """BODY[section] bytes (RFC 3501 6.4.5); b"" when the part does not exist.

        Exact slices of the stored message, except that NUL bytes come out as 0x80 (as Dovecot sends
        them: an IMAP literal may not carry NUL); lengths and offsets are unchanged."""
        out = self._section(part, kind, fields)
        if b"\x00" in out:
            out = out.replace(b"\x00", b"\x80")
        return out

    def _section(self, part: tuple[int, ...], kind: str | None, fields: tuple[str, ...]) -> bytes:
        raw = self.raw
        kind = kind.upper() if kind else None
        if not part:
            if kind is None:
                return raw
            if kind == "MIME":
                return b""
            end, body = self._top_header()
            if kind == "TEXT":
                return raw[body:]
            if kind == "HEADER":
                return raw[:body]
            hdr = self._fields()
            return self._fields_section(hdr, raw[self._top_fields_end:end], raw[end:body], kind, fields)
        p = self._find(part)
        if p is None:
            return b""
        if kind is None:
            return raw[p.body_start:p.end]
        if kind == "MIME":
            return raw[p.start:p.body_start]
        # HEADER / TEXT / HEADER.FIELDS[.NOT] of an encapsulated message
        if p.kind != "message" or not p.children:
            return b""
        m = p.children[0]
        if kind == "TEXT":
            return raw[m.body_start:m.end]
        if kind == "HEADER":
            return raw[m.start:m.body_start]
        if m.cut_short:  # an attached message a boundary cut to nothing: Dovecot answers an empty header
            return b"\r\n"
        # an attached message's header without its empty line gets no CRLF added (as in Dovecot)
        terminator = b"\r\n" if m.header_end < m.body_start else b""
        return self._fields_section(self._part_fields(m), raw[m.fields_end:m.header_end],
                                    raw[m.header_end:m.body_start], kind, fields, terminator)

    def _fields_section(self, hdr: list[HeaderField], rest: bytes, blank: bytes, kind: str,
                        names: tuple[str, ...], terminator: bytes = b"\r\n") -> bytes:
        """Matching (or non-matching) field lines exactly as stored, then the empty line. Like Dovecot,
        HEADER.FIELDS always ends with CRLF; HEADER.FIELDS.NOT passes on the header's own empty line
        (none if the header had none). `rest`: header bytes past the indexing budget, opaque: never a
        match, so HEADER.FIELDS.NOT passes them on as they are."""
        wanted = {n.lower() for n in names}
        if kind == "HEADER.FIELDS":
            keep = [f for f in hdr if f.name in wanted]
        elif kind == "HEADER.FIELDS.NOT":
            keep = [f for f in hdr if f.name not in wanted]
        else:
            return b""
        raw = self.raw
        out = b"".join(raw[f.start:f.end] for f in keep)
        if kind == "HEADER.FIELDS.NOT":
            out += rest
        if out and not out.endswith(b"\n"):
            out += b"\r\n"
        if kind == "HEADER.FIELDS.NOT":
            return out + blank
        return out + terminator

    # --- SEARCH helpers -----------------------------------------------------------------------------
    # RFC 2047 decoding is Python work per encoded word: one call decodes at most max_value_bytes of
    # encoded-word text; values past that are compared as written (unfolded), which still finds plain text.
    def header_values(self, name: str) -> list[str]:
        """Decoded values of every `name` field of the top header, in order."""
        lname = name.lower()
        budget = [self.limits.max_value_bytes]
        return [self._decoded(f, budget) for f in self._fields() if f.name == lname]

    def _decoded(self, f: HeaderField, budget: list[int]) -> str:
        text = unfold(self.raw[f.value_start:min(f.end, f.value_start + self.limits.max_value_bytes)])
        if budget[0] <= 0 or "=?" not in text:
            return text
        budget[0] -= len(text)
        return decode_words(text)

    def header_text(self) -> str:
        """The whole top header, decoded, one field per line."""
        raw = self.raw
        budget = [self.limits.max_value_bytes]
        lines = []
        for f in self._fields():
            lines.append(f"{raw[f.start:f.value_start].decode('utf-8', 'replace').rstrip(':')}: "
                         f"{self._decoded(f, budget)}")
        return "\n".join(lines)

    def body_text(self) -> str:
        """Decoded text of every text/* part (nested messages included), joined by newlines (computed once:
        prepare(["TEXT"]) does it in steps)."""
        text = self._memo.get("text")
        if not isinstance(text, str):
            text = run_steps(self._text_steps())
        return text

    def _text_steps(self) -> Generator[None, None, str]:
        if self._tree is None:
            self._set_tree((yield from parse_steps(self.raw, self.limits, global_messages=self.global_messages)))
        chunks: list[str] = []
        done = 0
        todo = [self.tree]
        while todo:
            part = todo.pop()
            if part.kind in ("multipart", "message"):
                todo.extend(reversed(part.children))
                continue
            d = self._data(part)
            if (d.type is not None and d.type.lower() != "text") or self._opaque(part, d):
                continue
            charset = next((v for k, v in d.params if k.lower() == "charset"), None)
            chunks.append(decode_body(self.raw[part.body_start:part.end], d.encoding, charset))
            done += 1 + (part.end - part.body_start) // _TEXT_BYTES_PER_UNIT
            if done >= STEP_WORK:
                done = 0
                yield
        text = "\n".join(chunks)
        self._memo["text"] = text
        self._grew()
        return text

    def sent_date(self) -> datetime.date | None:
        """The Date: header's calendar date in its own timezone (SENTBEFORE/SENTON/SENTSINCE)."""
        values = [f for f in self._fields() if f.name == "date"]
        if not values:
            return None
        f = values[-1]
        text = unfold(self.raw[f.value_start:min(f.end, f.value_start + self.limits.max_value_bytes)])
        try:
            return parsedate_to_datetime(text).date()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
