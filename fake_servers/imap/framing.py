"""Cutting the client's byte stream into complete commands (sans-I/O).

Why separate from parsing: a command may span several lines joined by literals, and whether to send the "+"
continuation request, or refuse an over-size literal or line, must be decided before the bytes arrive.
Refused data is counted and dropped as it streams, never buffered, so a hostile 1 GiB literal costs no memory.

`events(data)` yields events in order, lazily: the caller acts on each (e.g. runs a LOGIN) before the framer
reads on, so a literal is judged by the limit in force when its header is read (`max_literal` may change between
events), not when the chunk arrived. `feed(data)` is the same as a list.
- `Command(data)`: one whole command (literals inline, final CRLF removed);
- `Continue()`: a synchronising literal was accepted; the server must now send "+ ...";
- `Refused(tag, reason, code)`: a line or literal over the limits; answer with tagged BAD/NO (tag may be None).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from .lexer import NUMBER64_MAX

_LITERAL_TAIL = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n\Z")
_TAG = re.compile(rb"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class Command:
    data: bytes


@dataclass(frozen=True, slots=True)
class Continue:
    pass


@dataclass(frozen=True, slots=True)
class Refused:
    tag: str | None
    reason: str
    code: str | None = None
    synchronising: bool = False  # a refused {n}: the client will not send the literal


FrameEvent = Command | Continue | Refused

_LINE = 0
_LITERAL = 1
_SKIP_LINE = 2
_SKIP_LITERAL = 3


def tag_of(data: bytes) -> str | None:
    """The tag a command starts with, if one can be read."""
    m = _TAG.match(data)
    if not m or m.end() >= len(data) or data[m.end()] != 0x20:
        return None
    tag = m.group().decode("ascii")
    if any(c in tag for c in '(){%*"\\+'):
        return None
    return tag


class Framer:
    def __init__(self, max_line: int = 65536, max_literal: int = 50 * 1024 * 1024) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self._buf = bytearray()
        self._parts: list[bytes] = []  # lines and literals of the command being assembled
        self._size = 0
        self._state = _LINE
        self._need = 0  # octets of literal still expected (or still to skip)
        self._scan = 0
        self._refusal: Refused | None = None  # set while skipping the rest of a refused command

    @property
    def in_literal(self) -> bool:
        return self._state in (_LITERAL, _SKIP_LITERAL)

    def reset(self) -> None:
        """Forget everything buffered (after STARTTLS: nothing sent before the handshake may be acted on)."""
        self.__init__(self.max_line, self.max_literal)

    def feed(self, data: bytes) -> list[FrameEvent]:
        return list(self.events(data))

    def events(self, data: bytes) -> Iterator[FrameEvent]:
        """Frame `data`, yielding each event as soon as it is known.

        Why a generator: pipelined commands arrive in one chunk, and the limit of a later command's literal
        depends on what the earlier ones do (LOGIN raises it). The caller may change `max_literal` or call
        `reset()` between events; after `reset()` it must not resume the generator.
        """
        events: list[FrameEvent] = []
        view = memoryview(data)
        pos = 0
        n = len(data)
        while pos < n:
            if events:
                yield from events
                events.clear()
            st = self._state
            if st == _LITERAL:
                take = min(self._need, n - pos)
                self._parts.append(bytes(view[pos:pos + take]))
                self._need -= take
                pos += take
                if self._need == 0:
                    self._state = _LINE
                continue
            if st == _SKIP_LITERAL:
                take = min(self._need, n - pos)
                self._need -= take
                pos += take
                if self._need == 0:
                    self._state = _SKIP_LINE
                continue
            if st == _SKIP_LINE:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    # keep only enough of the tail to spot a literal marker split across chunks
                    self._buf = (self._buf + data[pos:])[-32:]
                    pos = n
                    continue
                tail = bytes(self._buf[-32:]) + data[max(pos, nl - 31):nl + 1]
                self._buf.clear()
                pos = nl + 1
                m = _LITERAL_TAIL.search(tail)
                if m and m.group(2):  # a LITERAL+ follows: it comes without asking, skip it too
                    self._need = int(m.group(1))
                    if self._need:
                        self._state = _SKIP_LITERAL
                    continue
                refusal = self._refusal
                self._refusal = None
                self._state = _LINE
                if refusal is not None:
                    events.append(refusal)
                continue
            # _LINE
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._buf += view[pos:]
                pos = n
                if len(self._buf) > self.max_line:
                    self._refuse_line(events)
                continue
            self._buf += view[pos:nl + 1]
            pos = nl + 1
            if len(self._buf) > self.max_line + 2:
                self._refuse_line(events, ended=True)
                continue
            line = bytes(self._buf)
            self._buf.clear()
            self._line(line, events)
        yield from events

    def _first_bytes(self) -> bytes:
        return self._parts[0] if self._parts else bytes(self._buf[:200])

    def _refuse_line(self, events: list[FrameEvent], ended: bool = False) -> None:
        tag = tag_of(self._first_bytes())
        refusal = Refused(tag, f"line longer than {self.max_line} octets", "TOOBIG")
        self._parts.clear()
        self._size = 0
        if ended:
            self._buf.clear()
            self._state = _LINE
            events.append(refusal)
        else:
            self._buf = bytearray(self._buf[-32:])
            self._refusal = refusal
            self._state = _SKIP_LINE

    def _line(self, line: bytes, events: list[FrameEvent]) -> None:
        self._size += len(line)
        m = _LITERAL_TAIL.search(line, max(0, len(line) - 32))
        if m is None:
            self._parts.append(line[:-2] if line.endswith(b"\r\n") else line[:-1])
            data = b"".join(self._parts)
            self._parts.clear()
            self._size = 0
            events.append(Command(data))
            return
        size = int(m.group(1))
        plus = bool(m.group(2))
        self._parts.append(line)
        if size > self.max_literal or self._size + size > self.max_literal + self.max_line:
            tag = tag_of(self._parts[0])
            reason = f"literal of {size} octets is over the limit of {self.max_literal}"
            if size > NUMBER64_MAX:  # RFC 9051: a literal's length is a number64
                reason = f"literal length {size} is not a 63-bit number64 (at most {NUMBER64_MAX})"
            refusal = Refused(tag, reason, "TOOBIG", synchronising=not plus)
            self._parts.clear()
            self._size = 0
            if not plus:
                self._state = _LINE
                events.append(refusal)
                return
            self._refusal = refusal
            self._need = size
            self._state = _SKIP_LITERAL if size else _SKIP_LINE
            return
        self._size += size
        if not plus:
            events.append(Continue())
        if size:
            self._need = size
            self._state = _LITERAL
