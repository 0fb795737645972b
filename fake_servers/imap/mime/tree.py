"""A byte-level MIME splitter: where every header, body and part of a message sits in its raw bytes.

Why not `email`: FETCH BODY[1.2.MIME] must return the exact original octets, and the `email` package does
not keep offsets. This module scans the raw message once and records byte ranges; nothing is copied or
decoded here. Its rules follow what Dovecot's message parser does (the reference server the tests compare
with): a header ends at the first empty line (or where an enclosing boundary line appears), a boundary
line is "--" plus the boundary at the start of a line (the longest active boundary that prefixes the line
wins, innermost first; an exact match, or one followed only by "--", ends the search), the [CR]LF before a
boundary line belongs to the boundary (unless the line cuts a header short: then it ends the body of the
cut part's parent), "--" right after the boundary closes the multipart, MIME-ness comes from MIME-Version or Content-Type (always for parts inside a
multipart), a part without Content-Type below multipart/digest is message/rfc822, a multipart without a
boundary parameter has no children, and a boundary parameter counts for its first 80 bytes only.
message/global (RFC 6532) is a leaf, as in Dovecot 2.3 and IMAP4rev1's grammar; with `global_messages`
(the tree an IMAP4rev2 session answers from, RFC 9051 7.5.2) it is entered like message/rfc822.

Why bounded, and how: a message is hostile input (anyone can send one to the MX), and one of 10 MB can hold
more than a million empty MIME parts. Every cost here is bounded by MimeLimits, with Dovecot's own limits
and Dovecot's own behaviour past them (lib-mail/message-parser.c, 2.3.19):

- nesting (Dovecot's max_nested_mime_parts, 100): a multipart or message/rfc822 part whose children would
  be nested `max_depth` deep is not entered; its body is opaque and BODYSTRUCTURE reports it as
  application/octet-stream (with its own parameters), as Dovecot does for such "truncated" parts;
- part count (max_total_mime_parts, 10,000, the whole message included): once that many parts exist no
  boundary line is recognised any more, so the part being read then runs to the end of the message (and
  its enclosing multiparts with it), and a message/rfc822 part met after that point is opaque as above;
- header fields (ours: Dovecot reads any number, in C): at most `max_header_fields` fields and
  `max_header_bytes` bytes of header are indexed in the whole message, in message order (as Dovecot's
  all_headers_max_size counts all headers together); the rest of a header block past that budget is kept
  as opaque bytes: BODY[...HEADER] and MIME sections still return it, but ENVELOPE, BODYSTRUCTURE and
  HEADER.FIELDS do not look into it;
- boundary search (ours): boundary lines are found with `bytes.find` (C speed) per active boundary, each
  boundary's search resuming where its last one stopped (the scan only moves forward), so no byte is
  searched twice for the same boundary. But every nesting level's boundary is searched for over the same
  bytes, so a body under 99 levels of multiparts is read 99 times over (Dovecot, in C, looks at each line
  starting with "--" once per level). So the search may read the message `max_scan_passes` times over
  (plus a fixed allowance); past that, as past the part limit, no boundary line counts any more.

Python-level work is per part and per indexed field, both bounded, and it is done in steps: the parser is
a generator that yields after each STEP_WORK units of work (a few milliseconds), so a server can serve
other clients between the steps of one large message (parse_steps; parse_message runs it in one go).
What a message exceeded is recorded (Part tree root `.exceeded`), which is how the delivery check
(fake_servers/mime_limits.py) reads the same rules instead of a second parser.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TypeVar

from recall_lab.fake_servers.imap.mime.rfc822 import parse_content_type

_BOUNDARY_MAX = 70 + 10  # Dovecot keeps this many bytes of a boundary parameter (RFC 2046 allows 70)
_BOUNDARY_LINE_MAX = _BOUNDARY_MAX + 2 + 2  # how much of a line without LF Dovecot compares
#: How much work one step of parse_steps does: one unit per part, one per FIELDS_PER_UNIT indexed fields
#: (roughly 2 ms of Python on this project's machines).
STEP_WORK = 64
FIELDS_PER_UNIT = 32
_FIRST_WINDOW = 8192  # how far the first search for a boundary looks (doubled each time it finds nothing)
_MAX_WINDOW = 1 << 20  # ... up to this, so that one search stays well under a millisecond
_BYTES_PER_UNIT = 1 << 16  # searching this many bytes counts as one unit of work
_CHARS_PER_UNIT = 128  # ... and so does parsing this many characters of a structured value
_SCAN_ALLOWANCE = 16 << 20  # boundary searching always allowed on top of max_scan_passes times the size


class _Stop(Exception):
    """Raised inside the scanner to stop at the first limit (for the delivery check, which needs no more)."""


@dataclass(frozen=True, slots=True)
class MimeLimits:
    """How much MIME structure one message may make us build (see the module docstring for what happens
    past each limit). Passed in (server config, delivery check), never looked up globally.

    max_parts and max_depth are Dovecot's defaults. max_header_fields and max_header_bytes bound the header
    indexing of the whole message (a Python object per field: two per part at the part limit).
    max_value_bytes is how much text the char-by-char parsers of structured values (addresses, Content-*)
    read for one ENVELOPE or one part. max_scan_passes bounds the boundary search (real mail nests a few
    levels: a few passes). max_line_length only concerns delivery (RFC 5322 2.1.1: 998 octets without the
    CRLF); rendering does not care how long lines are.
    """

    max_parts: int = 10_000
    max_depth: int = 100
    max_header_fields: int = 20_000
    max_header_bytes: int = 1 << 20
    max_value_bytes: int = 16 << 10
    max_scan_passes: int = 16
    max_line_length: int = 998

    def __post_init__(self) -> None:
        for name in ("max_parts", "max_depth", "max_header_fields", "max_header_bytes", "max_value_bytes",
                     "max_scan_passes", "max_line_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MimeLimits.{name} must be a positive int, not {value!r}")


DEFAULT_LIMITS = MimeLimits()


@dataclass(slots=True)
class HeaderField:
    """One header field: its lowercase name and the byte range of all its lines (newline included)."""

    name: str
    start: int
    end: int
    value_start: int  # first byte after the colon (or == end when the line has no colon)


@dataclass(slots=True)
class Part:
    """One MIME entity: header [start, body_start), body [body_start, end).

    kind is "multipart", "message" (message/rfc822, whose only child is the encapsulated message) or
    "leaf". content_type is the lowercase "type/subtype" Dovecot would derive, or "" for the default.
    truncated: a multipart or message/rfc822 part a limit kept us from entering (an opaque leaf).
    fields_end: where the indexed header fields stop (== header_end unless the header budget ran out).
    """

    start: int
    body_start: int = 0
    end: int = 0
    header_end: int = 0  # end of the header bytes proper (== body_start except when a boundary cut it)
    kind: str = "leaf"
    mime: bool = False
    content_type: str = ""
    boundary: bytes | None = None
    multipart_declared: bool = False  # Content-Type said multipart/* (even without a boundary)
    in_digest: bool = False
    children: list[Part] = field(default_factory=list)
    fields: list[HeaderField] | None = None
    cut_short: bool = False  # the empty message Dovecot sees inside a message/rfc822 part a boundary cut short
    truncated: bool = False
    fields_end: int = -1
    lines: int = -1  # LF count of the body, filled in by whoever needs it first
    exceeded: str | None = None  # root only: the first MimeLimits field the message went past, or None


class _Stack:
    """The boundaries of the enclosing multiparts (innermost last), as one immutable node per level.

    Why nodes: a boundary line must be matched against every active boundary; keeping per node a dict of
    boundary -> innermost index and the distinct lengths turns that into a few dict lookups, and the
    distinct search needles ("\\n--" + boundary) let the scanner take the nearest of their next occurrences
    in one C-level min().
    """

    __slots__ = ("boundary", "needle", "parent", "chain", "latest", "lengths", "needles")

    def __init__(self, boundary: bytes, parent: _Stack | None) -> None:
        self.boundary = boundary
        self.needle = b"\n--" + boundary
        self.parent = parent
        self.chain: tuple[_Stack, ...] = (parent.chain if parent is not None else ()) + (self,)
        latest = dict(parent.latest) if parent is not None else {}
        known = boundary in latest
        latest[boundary] = len(self.chain) - 1
        self.latest = latest
        if parent is not None and len(boundary) in parent.lengths:
            self.lengths = parent.lengths
        else:
            self.lengths = sorted({len(b) for b in latest}, reverse=True)
        parent_needles = parent.needles if parent is not None else ()
        self.needles: tuple[bytes, ...] = parent_needles if known else parent_needles + (self.needle,)

    def __len__(self) -> int:
        return len(self.chain)


# (content_end, line_start, index in the stack, closes) of one boundary line
_Hit = tuple[int, int, int, bool]
# what parsing one entity gives: the part, the boundary line that ended it (or None), the stack then
_Parsed = tuple[Part, _Hit | None, _Stack | None]
T = TypeVar("T")


class _Scanner:
    """Parses one raw message into a Part tree; see the module docstring for the rules and the bounds."""

    def __init__(self, raw: bytes, limits: MimeLimits, stop_at_limit: bool = False,
                 global_messages: bool = False) -> None:
        self.raw = raw
        self.global_messages = global_messages
        self.n = len(raw)
        self.limits = limits
        self.stop_at_limit = stop_at_limit
        self.parts = 0
        self.work = 0
        self.fields_left = limits.max_header_fields
        self.bytes_left = limits.max_header_bytes
        self.scan_left = limits.max_scan_passes * self.n + _SCAN_ALLOWANCE
        self.exceeded: str | None = None
        self._blind = False  # past the part limit or the search budget: no boundary line counts any more
        # needle -> (from, to, hit): hit >= 0: the first occurrence at or after `from` is at `hit`;
        # hit < 0: no occurrence starts in [from, to)
        self._found: dict[bytes, tuple[int, int, int]] = {}
        # boundary needles: what is known of their next occurrence, and how far the next search looks
        self._next: dict[bytes, int] = {}
        self._window: dict[bytes, int] = {}
        self._frontier = 0

    def _exceed(self, limit: str) -> None:
        """Note the first MimeLimits field (its name) the message went past."""
        if self.exceeded is None:
            self.exceeded = limit
            if self.stop_at_limit:
                raise _Stop

    # --- searching ----------------------------------------------------------------------------------
    def _occurrence(self, needle: bytes, pos: int, limit: int) -> Generator[None, None, int]:
        """The first index >= pos where `needle` starts, if it is < limit; else -1. Remembered per needle,
        so a later search from further on continues where this one stopped."""
        start = frm = pos
        known = self._found.get(needle)
        if known is not None:
            kfrom, kto, khit = known
            if kfrom <= pos:
                if khit >= 0:
                    if pos <= khit:
                        return khit if khit < limit else -1
                elif pos < kto:
                    if limit <= kto:
                        return -1
                    start, frm = kto, kfrom
        if start >= limit:
            return -1
        hit = yield from find_steps(self.raw, needle, start, min(self.n, limit + len(needle) - 1))
        if hit >= 0:
            self._found[needle] = (pos, 0, hit)
            return hit
        self._found[needle] = (frm, limit, -1)
        return -1

    def _push(self, boundary: bytes, parent: _Stack | None, pos: int) -> _Stack:
        """A new innermost boundary, active from `pos` on."""
        stack = _Stack(boundary, parent)
        if stack.needle not in self._next:
            self._next[stack.needle] = 2 * pos + 1
            self._window[stack.needle] = _FIRST_WINDOW
        return stack

    def _next_line(self, stack: _Stack, pos: int) -> Generator[None, None, int]:
        """Index of the LF before the first line after `pos` that starts with "--" and a boundary of
        `stack`, or -1.

        What is known of each needle lives in `_next` as 2 * position + flag: flag 0, its first occurrence
        at or after where it was last searched is at `position` (len(raw): none); flag 1, it does not occur
        before `position`. The least of the stack's values decides: an exact occurrence at or after `pos` is
        the answer, anything else is searched further, a window at a time (doubled each time it finds
        nothing, up to _MAX_WINDOW). So a boundary that never occurs costs a logarithmic number of searches
        until its windows are large, a short sibling part never searches far past its end, and no byte is
        searched twice for the same boundary. The searching counts as work (and may yield): with many
        nested boundaries each one's search covers the same bytes, which is the one cost here that grows
        with depth times size.
        """
        if pos < self._frontier:  # the scan went back (it never does): forget what was known
            self._next = {k: 2 * pos + 1 for k in self._next}
        self._frontier = pos
        needles = stack.needles
        known = self._next
        raw, n = self.raw, self.n
        while True:
            if len(needles) == 1:
                needle = needles[0]
                m = known[needle]
            else:
                values = list(map(known.__getitem__, needles))
                m = min(values)
                needle = needles[values.index(m)]
            key = m >> 1
            if not m & 1 and key >= pos:
                return key if key < n else -1
            start = key if key > pos else pos
            window = self._window[needle]
            limit = start + window
            if limit >= n:
                hit = raw.find(needle, start)
                known[needle] = 2 * (hit if hit >= 0 else n)
            else:
                hit = raw.find(needle, start, limit + len(needle) - 1)
                if hit >= 0:
                    known[needle] = 2 * hit
                else:
                    known[needle] = 2 * limit + 1
                    self._window[needle] = min(2 * window, _MAX_WINDOW)
            searched = (hit if hit >= 0 else min(limit, n)) - start
            self.scan_left -= searched
            if self.scan_left < 0:
                self._blind = True
                self._exceed("max_scan_passes")
                return -1
            self.work += 1 + searched // _BYTES_PER_UNIT
            if self.work >= STEP_WORK:
                self.work = 0
                yield

    def _match_boundary(self, pos: int, stack: _Stack | None) -> tuple[int, bool] | None:
        """Is the line at `pos` a boundary line of `stack`? -> (index in stack, closes). Dovecot's
        boundary_find: innermost first, the longest prefix wins, and an exact match (or one followed only by
        "--") stops the search."""
        raw = self.raw
        if stack is None or self._blind or not raw.startswith(b"--", pos):
            return None
        s = pos + 2
        lf = raw.find(b"\n", s, s + _BOUNDARY_LINE_MAX + 4)
        trailing = False
        if lf >= 0:
            size = lf - s
            if size and raw[lf - 1] == 13:
                size -= 1
            trailing = size > 2 and raw.startswith(b"--", s + size - 2)
        else:  # no LF close by: only boundaries (<= 80 bytes) are compared, so the exact length no longer matters
            size = min(self.n - s, _BOUNDARY_LINE_MAX)
        latest = stack.latest
        found: list[tuple[int, int]] = []
        for length in stack.lengths:
            if length <= size:
                index = latest.get(raw[s:s + length])
                if index is not None:
                    found.append((index, length))
        if not found:
            return None
        found.sort(reverse=True)
        best, best_len = -1, -1
        for index, length in found:
            if length > best_len:
                best, best_len = index, length
                if length == size or (trailing and length + 2 == size):
                    break
        if self.parts >= self.limits.max_parts:
            self._blind = True
            self._exceed("max_parts")
            return None
        return best, raw.startswith(b"--", s + best_len)

    def _find_boundary(self, pos: int, stack: _Stack | None) -> Generator[None, None, _Hit | None]:
        """The first boundary line at or after `pos` (a line start), or None when the data ends first.

        -> (content_end, line_start, stack index, closes); content_end excludes the [CR]LF that precedes the
        boundary line.
        """
        if stack is None:
            return None
        hit = self._match_boundary(pos, stack)
        if hit is not None:
            return pos, pos, hit[0], hit[1]
        if self._blind:
            return None  # past the part limit (or the search budget) no boundary line counts
        while True:
            lf = yield from self._next_line(stack, pos)
            if lf < 0:
                return None
            hit = self._match_boundary(lf + 1, stack)
            if hit is not None:
                raw = self.raw
                content_end = lf - 1 if lf > pos and raw[lf - 1] == 13 else lf
                return max(content_end, pos), lf + 1, hit[0], hit[1]
            if self._blind:
                return None
            pos = lf + 1  # a line that only looked like one (a long boundary in a last line without LF)

    def _skip_line(self, pos: int) -> int:
        lf = self.raw.find(b"\n", pos)
        return self.n if lf < 0 else lf + 1

    # --- headers ----------------------------------------------------------------------------------
    def _empty_line(self, start: int, limit: int) -> Generator[None, None, int]:
        """Start of the first empty line ("\\n" or "\\r\\n") at or after `start` and before `limit`, or -1."""
        raw = self.raw
        if raw.startswith(b"\n", start) or raw.startswith(b"\r\n", start):
            return start if start < limit else -1
        crlf = yield from self._occurrence(b"\n\r\n", start, limit)
        lf = yield from self._occurrence(b"\n\n", start, crlf if crlf >= 0 else limit)
        if lf >= 0:
            return lf + 1
        return crlf + 1 if crlf >= 0 else -1

    def _header(self, part: Part, stack: _Stack | None) -> Generator[None, None, tuple[int, int, _Hit | None]]:
        """Find where `part`'s header ends. -> (header_end, body_start, boundary hit that cut it).

        Dovecot checks for an enclosing boundary before every header line: the header ends at the first
        empty line or the first boundary line, whichever comes first."""
        raw = self.raw
        start = part.start
        hit = yield from self._find_boundary(start, stack)
        eoh = yield from self._empty_line(start, hit[1] if hit is not None else self.n)
        if eoh >= 0:
            return eoh, eoh + (1 if raw[eoh] == 10 else 2), None
        if hit is not None:
            # the previous newline belongs to the boundary line
            end = hit[1]
            if end > start and raw[end - 1] == 10:
                end -= 1
                if end > start and raw[end - 1] == 13:
                    end -= 1
            return end, end, (end, hit[1], hit[2], hit[3])
        return self.n, self.n, None

    def _classify(self, part: Part) -> Generator[None, None, None]:
        """Decide MIME-ness, content type and boundary from the part's (indexed) header fields."""
        fields, stop = yield from header_fields_steps(self.raw, part.start, part.header_end, self.fields_left,
                                                      self.bytes_left)
        self.fields_left -= len(fields)
        self.bytes_left -= stop - part.start
        self.work += len(fields) // FIELDS_PER_UNIT
        if stop < part.header_end:
            self._exceed("max_header_fields" if self.fields_left <= 0 else "max_header_bytes")
        part.fields = fields
        part.fields_end = stop
        ctype_field = None
        for f in fields:
            if f.name == "mime-version":
                part.mime = True
            elif f.name == "content-type" and ctype_field is None:
                ctype_field = f
                part.mime = True
        ctype = ""
        if ctype_field is not None and part.mime:
            end = min(ctype_field.end, ctype_field.value_start + self.limits.max_value_bytes)
            value = self.raw[ctype_field.value_start:end]
            ct = parse_content_type(value.decode("utf-8", "surrogateescape"))
            self.work += len(value) // _CHARS_PER_UNIT
            ctype = f"{ct.type}/{ct.subtype}".lower() if ct.subtype else ct.type.lower()
            if ctype.startswith("multipart/"):
                part.multipart_declared = True
                if ct.ok:
                    for k, v in ct.params:
                        if k.lower() == "boundary":
                            part.boundary = v.encode("utf-8", "surrogateescape")[:_BOUNDARY_MAX]
                            break
            part.content_type = ctype
        if ctype_field is None or not part.mime:
            if part.in_digest:
                part.kind = "message"
            return
        if ctype == "message/rfc822" or (ctype == "message/global" and self.global_messages):
            part.kind = "message"
        elif part.multipart_declared:
            part.kind = "multipart"

    # --- entities -----------------------------------------------------------------------------------
    def parse(self, start: int, stack: _Stack | None, mime_child: bool, in_digest: bool, depth: int
              ) -> Generator[None, None, _Parsed]:
        """Parse the entity at `start` (`depth` levels below the root). -> (part, the boundary hit that ended
        it or None, the stack then). A generator: it yields after every STEP_WORK units of work."""
        self.parts += 1
        self.work += 1
        if self.work >= STEP_WORK:
            self.work = 0
            yield
        limits = self.limits
        part = Part(start=start, mime=mime_child, in_digest=in_digest)
        header_end, body_start, cut = yield from self._header(part, stack)
        part.header_end = header_end
        part.body_start = body_start
        yield from self._classify(part)
        own: _Stack | None = None
        if part.kind == "multipart" and part.boundary is not None and cut is None and header_end < body_start:
            # Dovecot starts the multipart at the empty line, unless its children would nest too deep
            if depth + 1 >= limits.max_depth:
                self._exceed("max_depth")
                part.kind = "leaf"
                part.truncated = True
            else:
                own = self._push(part.boundary, stack, body_start)
        if cut is None and stack is not None and header_end < body_start:
            # A boundary right after the empty line steals it (it becomes the [CR]LF before the
            # boundary line), unless it is the boundary of this very multipart.
            hit = self._match_boundary(body_start, own or stack)
            if hit is not None and (own is None or hit[0] != len(own) - 1):
                cut = (header_end, body_start, hit[0], hit[1])
                part.body_start = body_start = header_end
                own = None
        if part.kind == "message" and (depth + 1 >= limits.max_depth or self.parts >= limits.max_parts):
            self._exceed("max_depth" if depth + 1 >= limits.max_depth else "max_parts")
            part.kind = "leaf"
            part.truncated = True
        if cut is not None:
            part.end = body_start
            if part.kind == "message":
                # Dovecot: the body is empty, so the encapsulated message is an empty one (no header, no body)
                self.parts += 1
                part.children.append(Part(start=body_start, body_start=body_start, end=body_start,
                                          header_end=body_start, cut_short=True, fields=[],
                                          fields_end=body_start))
            elif part.kind == "multipart":
                part.boundary = None
            # The [CR]LF before a boundary line that cuts a header is not the boundary's, as it is after a
            # body: Dovecot adds it to the body of the part's parent, so every part that ends here except
            # this one ends after it.
            return part, (cut[1], cut[1], cut[2], cut[3]), stack
        if part.kind == "multipart" and part.boundary is not None:
            if own is None:  # the header ran to the end of the data: no body, no children
                part.end = self.n
                return part, None, stack
            return (yield from self._multipart(part, stack, own, depth))
        if part.kind == "message":
            child, hit, stack2 = yield from self.parse(body_start, stack, False, False, depth + 1)
            part.children.append(child)
            part.end = hit[0] if hit is not None else child.end
            return part, hit, stack2
        hit = yield from self._find_boundary(body_start, stack)
        part.end = hit[0] if hit is not None else self.n
        return part, hit, stack

    def _multipart(self, part: Part, stack: _Stack | None, own: _Stack, depth: int
                   ) -> Generator[None, None, _Parsed]:
        own_index = len(own) - 1
        digest = part.content_type == "multipart/digest"
        hit = yield from self._find_boundary(part.body_start, own)
        while True:
            if hit is None:
                part.end = self.n
                return part, None, stack
            content_end, line_start, index, closes = hit
            if index != own_index:
                # an enclosing part's boundary ends this multipart (and forgets boundaries in between)
                part.end = content_end
                return part, hit, own.chain[index]
            after = self._skip_line(line_start)
            if closes:
                # epilogue: runs to the next enclosing boundary or the end
                hit = yield from self._find_boundary(after, stack)
                part.end = hit[0] if hit is not None else self.n
                return part, hit, stack
            child, hit, own_after = yield from self.parse(after, own, True, digest, depth + 1)
            part.children.append(child)
            if hit is not None and hit[2] < own_index:
                part.end = hit[0]
                assert own_after is not None
                return part, hit, own_after.chain[hit[2]]


def parse_steps(raw: bytes, limits: MimeLimits = DEFAULT_LIMITS, stop_at_limit: bool = False,
                global_messages: bool = False) -> Generator[None, None, Part]:
    """Split `raw` into its Part tree within `limits`, in steps: the generator yields after each bounded
    amount of work (STEP_WORK parts or indexed fields) and returns the root. Never raises: garbage gives a
    (possibly odd) valid tree. The root's `exceeded` names the MimeLimits field, if any, that cut the structure
    short. With stop_at_limit the scan ends there and the root is all that is returned (an empty Part that
    only says what was exceeded: for a check, not for rendering). With global_messages a message/global part
    is an encapsulated message, as message/rfc822 is (RFC 9051)."""
    scanner = _Scanner(raw, limits, stop_at_limit, global_messages)
    try:
        part, _, _ = yield from scanner.parse(0, None, False, False, 0)
    except _Stop:
        part = Part(start=0)
    part.end = len(raw)
    part.exceeded = scanner.exceeded
    return part


def run_steps(steps: Generator[None, None, T]) -> T:
    """Drive a step generator to its end in one go and return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def find_steps(raw: bytes, needle: bytes, start: int, end: int) -> Generator[None, None, int]:
    """raw.find(needle, start, end), a window of _MAX_WINDOW bytes at a time, yielding between windows (a
    50 MB header is searched in pieces of well under a millisecond)."""
    pos = start
    while True:
        stop = min(end, pos + _MAX_WINDOW + len(needle) - 1)
        hit = raw.find(needle, pos, stop)
        if hit >= 0 or stop >= end:
            return hit
        pos = stop - len(needle) + 1
        yield


def parse_message(raw: bytes, limits: MimeLimits = DEFAULT_LIMITS) -> Part:
    """parse_steps in one go."""
    return run_steps(parse_steps(raw, limits))


# one field: its first line, then its continuation lines (those starting with a blank)
_FIELD = re.compile(rb"([^:\n]*)(:?)[^\n]*\n?(?:[ \t][^\n]*\n?)*")


def header_fields(raw: bytes, start: int, end: int, max_fields: int | None = None,
                  max_bytes: int | None = None) -> tuple[list[HeaderField], int]:
    """header_fields_steps in one go."""
    return run_steps(header_fields_steps(raw, start, end, max_fields, max_bytes))


def header_fields_steps(raw: bytes, start: int, end: int, max_fields: int | None = None,
                        max_bytes: int | None = None) -> Generator[None, None, tuple[list[HeaderField], int]]:
    """The header fields in raw[start:end], continuation lines folded into their field, and where the
    indexing stopped (== end unless `max_fields` fields or `max_bytes` bytes were reached first); yields
    every STEP_WORK * FIELDS_PER_UNIT fields.

    A line without a colon counts as a field whose name is the whole line (as Dovecot does), so
    HEADER.FIELDS.NOT keeps it.
    """
    out: list[HeaderField] = []
    fields_left = -1 if max_fields is None else max(max_fields, 0)
    stop = end if max_bytes is None else min(end, start + max(max_bytes, 0))
    step = STEP_WORK * FIELDS_PER_UNIT
    # the regex never runs past the byte budget: a field crossing it is matched short and not indexed
    for m in _FIELD.finditer(raw, start, min(end, stop + 1)):
        fstart, fend = m.span()
        if fstart == fend:
            break
        if fields_left == 0 or fend > stop:
            return out, fstart
        fields_left -= 1
        if m.group(2):
            name = m.group(1).decode("latin-1").rstrip(" \t").lower()
            value_start = m.end(2)
        else:
            name = m.group(1).rstrip(b"\r\n").decode("latin-1").strip().lower()
            value_start = m.end(1) + 1 if m.end(1) < end else m.end(1)
        out.append(HeaderField(name, fstart, fend, value_start))
        if len(out) % step == 0:
            yield
    return out, end
