"""The reference the bounded MIME scanner (fake_servers/imap/mime/tree.py) is tested against.

This is the scanner the server used before MIME parsing was bounded: a line-by-line walk, simple to check
by eye, but unbounded (no part or depth limit of its own beyond a recursion guard) and quadratic on some
inputs (each header searched to the end of the message, each line copied to be compared). It is kept here,
for tests only, with the three rules comparing with Dovecot showed it had wrong, so that it states the
behaviour the fast scanner must have on every message within the limits (test_mime_limits.py):

- a boundary parameter counts for its first 80 bytes (Dovecot's BOUNDARY_STRING_MAX_LEN);
- a boundary line is matched as Dovecot's boundary_find does: a boundary may be as long as the whole line,
  "--" included, and a match followed only by "--" stops the search (innermost first);
- the [CR]LF before a boundary line that cuts a header short goes to the parent's body, so every part that
  ends at that boundary except the cut one ends after it (for a message/rfc822 part too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from recall_lab.fake_servers.imap.mime.rfc822 import parse_content_type

_MAX_DEPTH = 100  # deeper nesting than this is parsed as an opaque leaf (a defence, not a MIME rule)
_BOUNDARY_MAX = 70 + 2 + 2 + 10  # how much of a boundary line Dovecot compares when it has no LF
_BOUNDARY_PARAM_MAX = 70 + 10  # how much of a boundary parameter counts


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


class _Scanner:
    """Parses one raw message into a Part tree; see the module docstring for the rules."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.n = len(raw)

    # --- boundary lines -------------------------------------------------------------------------
    def _match_boundary(self, pos: int, stack: list[bytes]) -> tuple[int, bool] | None:
        """Is the line at `pos` a boundary line of one of `stack`? -> (index in stack, closes)."""
        raw = self.raw
        if not raw.startswith(b"--", pos):
            return None
        lf = raw.find(b"\n", pos + 2)
        trailing = False
        if lf < 0:
            line = raw[pos + 2:pos + 2 + _BOUNDARY_MAX]
        else:
            line = raw[pos + 2:lf]
            if line.endswith(b"\r"):
                line = line[:-1]
            trailing = len(line) > 2 and line.endswith(b"--")
        best = -1
        best_len = -1
        for i in range(len(stack) - 1, -1, -1):
            b = stack[i]
            if len(b) <= len(line) and line.startswith(b) and len(b) > best_len:
                best, best_len = i, len(b)
                if best_len == len(line) or (trailing and best_len + 2 == len(line)):
                    break
        if best < 0:
            return None
        after = pos + 2 + best_len
        return best, raw.startswith(b"--", after)

    def _find_boundary(self, pos: int, stack: list[bytes], check_first: bool = True
                       ) -> tuple[int, int, int, bool] | None:
        """Find the next boundary line at or after `pos` (a line start).

        -> (content_end, line_start, stack index, closes) or None when the data ends first.
        content_end excludes the [CR]LF that precedes the boundary line.
        """
        if not stack:
            return None
        raw = self.raw
        if check_first:
            hit = self._match_boundary(pos, stack)
            if hit is not None:
                return pos, pos, hit[0], hit[1]
        search = pos
        while True:
            i = raw.find(b"\n--", search)
            if i < 0:
                return None
            hit = self._match_boundary(i + 1, stack)
            if hit is not None:
                content_end = i - 1 if i > pos and raw[i - 1] == 13 else i
                if content_end < pos:
                    content_end = pos
                return content_end, i + 1, hit[0], hit[1]
            search = i + 1

    def _skip_line(self, pos: int) -> int:
        lf = self.raw.find(b"\n", pos)
        return self.n if lf < 0 else lf + 1

    # --- headers ----------------------------------------------------------------------------------
    def _header(self, part: Part, stack: list[bytes]) -> tuple[int, int, tuple[int, int, int, bool] | None]:
        """Find where `part`'s header ends. -> (header_end, body_start, boundary hit that cut it)."""
        raw = self.raw
        start = part.start
        if stack:
            # Dovecot checks for an enclosing boundary before every header line (and once more right
            # after the empty line, see parse()).
            pos = start
            while pos < self.n:
                if raw[pos] == 10 or (raw[pos] == 13 and pos + 1 < self.n and raw[pos + 1] == 10):
                    return pos, pos + (1 if raw[pos] == 10 else 2), None
                hit = self._match_boundary(pos, stack)
                if hit is not None:
                    # the previous newline belongs to the boundary line
                    end = pos
                    if end > start and raw[end - 1] == 10:
                        end -= 1
                        if end > start and raw[end - 1] == 13:
                            end -= 1
                    return end, end, (end, pos, hit[0], hit[1])
                lf = raw.find(b"\n", pos)
                if lf < 0:
                    return self.n, self.n, None
                pos = lf + 1
            return self.n, self.n, None
        # fast path: no enclosing boundaries, the header ends at the first empty line
        if raw.startswith(b"\n", start):
            return start, start + 1, None
        if raw.startswith(b"\r\n", start):
            return start, start + 2, None
        a = raw.find(b"\n\n", start)
        b = raw.find(b"\n\r\n", start)
        if a < 0 and b < 0:
            return self.n, self.n, None
        if b < 0 or (0 <= a < b):
            return a + 1, a + 2, None
        return b + 1, b + 3, None

    def _classify(self, part: Part) -> None:
        """Decide MIME-ness, content type and boundary from the part's header fields."""
        fields = header_fields(self.raw, part.start, part.header_end)
        part.fields = fields
        ctype_field = None
        for f in fields:
            if f.name == "mime-version":
                part.mime = True
            elif f.name == "content-type" and ctype_field is None:
                ctype_field = f
                part.mime = True
        ctype = ""
        if ctype_field is not None and part.mime:
            value = self.raw[ctype_field.value_start:ctype_field.end]
            ct = parse_content_type(value.decode("utf-8", "surrogateescape"))
            ctype = f"{ct.type}/{ct.subtype}".lower() if ct.subtype else ct.type.lower()
            if ctype.startswith("multipart/"):
                part.multipart_declared = True
                if ct.ok:
                    for k, v in ct.params:
                        if k.lower() == "boundary":
                            part.boundary = v.encode("utf-8", "surrogateescape")[:_BOUNDARY_PARAM_MAX]
                            break
            part.content_type = ctype
        if ctype_field is None or not part.mime:
            if part.in_digest:
                part.kind = "message"
            return
        if ctype == "message/rfc822":
            part.kind = "message"
        elif part.multipart_declared:
            part.kind = "multipart"

    # --- entities -----------------------------------------------------------------------------------
    def parse(self, start: int, stack: list[bytes], mime_child: bool, in_digest: bool, depth: int
              ) -> tuple[Part, tuple[int, int, int, bool] | None, list[bytes]]:
        """Parse the entity at `start`. -> (part, the boundary hit that ended it or None, stack then)."""
        part = Part(start=start, mime=mime_child, in_digest=in_digest)
        header_end, body_start, cut = self._header(part, stack)
        part.header_end = header_end
        part.body_start = body_start
        self._classify(part)
        if cut is None and stack and header_end < body_start:
            # A boundary right after the empty line steals it (it becomes the [CR]LF before the
            # boundary line), unless it is the boundary of this very multipart.
            own = part.boundary if part.kind == "multipart" and part.boundary is not None else None
            check = stack + [own] if own is not None else stack
            hit = self._match_boundary(body_start, check)
            if hit is not None and (own is None or hit[0] != len(stack)):
                cut = (header_end, body_start, hit[0], hit[1])
                part.body_start = body_start = header_end
        if depth > _MAX_DEPTH:
            part.kind = "leaf"
        if cut is not None:
            part.end = body_start
            if part.kind == "message":
                # Dovecot: the body is empty, so the encapsulated message is an empty one (no header, no body)
                part.children.append(Part(start=body_start, body_start=body_start, end=body_start,
                                          header_end=body_start, cut_short=True))
            elif part.kind == "multipart":
                part.boundary = None
            return part, (cut[1], cut[1], cut[2], cut[3]), stack
        if part.kind == "multipart" and part.boundary is not None:
            return self._multipart(part, stack, depth)
        if part.kind == "message":
            child, hit, stack2 = self.parse(body_start, stack, False, False, depth + 1)
            part.children.append(child)
            part.end = hit[0] if hit is not None else child.end
            return part, hit, stack2
        hit = self._find_boundary(body_start, stack)
        part.end = hit[0] if hit is not None else self.n
        return part, hit, stack

    def _multipart(self, part: Part, stack: list[bytes], depth: int
                   ) -> tuple[Part, tuple[int, int, int, bool] | None, list[bytes]]:
        assert part.boundary is not None
        own = stack + [part.boundary]
        own_index = len(own) - 1
        digest = part.content_type == "multipart/digest"
        hit = self._find_boundary(part.body_start, own)
        while True:
            if hit is None:
                part.end = self.n
                return part, None, stack
            content_end, line_start, index, closes = hit
            if index != own_index:
                # an enclosing part's boundary ends this multipart (and forgets boundaries in between)
                part.end = content_end
                return part, hit, own[:index + 1]
            after = self._skip_line(line_start)
            if closes:
                # epilogue: runs to the next enclosing boundary or the end
                hit = self._find_boundary(after, stack)
                part.end = hit[0] if hit is not None else self.n
                return part, hit, stack
            child, hit, own_after = self.parse(after, own, True, digest, depth + 1)
            part.children.append(child)
            if hit is not None and hit[2] < own_index:
                part.end = hit[0]
                return part, hit, own_after[:hit[2] + 1]


def parse_message(raw: bytes) -> Part:
    """Split `raw` into its Part tree. Never raises: garbage gives a (possibly odd) valid tree."""
    scanner = _Scanner(raw)
    part, _, _ = scanner.parse(0, [], False, False, 0)
    part.end = len(raw)
    return part


_FIELD_NAME = re.compile(rb"[^:\r\n]*")


def header_fields(raw: bytes, start: int, end: int) -> list[HeaderField]:
    """The header fields in raw[start:end], continuation lines folded into their field.

    A line without a colon counts as a field whose name is the whole line (as Dovecot does), so
    HEADER.FIELDS.NOT keeps it.
    """
    out: list[HeaderField] = []
    pos = start
    while pos < end:
        lf = raw.find(b"\n", pos, end)
        line_end = end if lf < 0 else lf + 1
        first = raw[pos]
        if (first == 32 or first == 9) and out:
            out[-1].end = line_end
            pos = line_end
            continue
        colon = raw.find(b":", pos, line_end)
        if colon < 0:
            name = raw[pos:line_end].rstrip(b"\r\n")
            out.append(HeaderField(name.decode("latin-1").strip().lower(), pos, line_end, line_end))
        else:
            name = raw[pos:colon]
            out.append(HeaderField(name.decode("latin-1").rstrip(" \t").lower(), pos, line_end, colon + 1))
        pos = line_end
    return out
