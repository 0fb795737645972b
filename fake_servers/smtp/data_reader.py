"""The body of one SMTP DATA command, read in bulk into one buffer with the size limit enforced while reading.

Why not aiosmtpd's reader: it keeps one bytearray object per line until the final dot, so a 10 MB body of empty
lines costs about 5 million objects (~500 MB) before the size limit or anything else looks at it, and it reads
line by line, holding the event loop for every line a client has sent in one burst. This reader takes what the
socket delivered as one block, finds line ends, the end marker and dot-stuffed lines with C-speed byte searches,
and appends the content to a single bytearray that never outgrows the size limit: memory is the limit plus one
network read, whatever the line structure.

What it keeps from aiosmtpd 1.4 (a property test runs both on the same bytes): lines end only at CRLF (a bare CR
or bare LF is part of a line, for the canonical-form check to refuse later); only a line that is exactly "." ends
the body, i.e. CRLF.CRLF or "." as the first line (RFC 5321 4.5.2; this is also the SMTP smuggling defence:
"<LF>.<LF>" or "<CR>.<CR>" end nothing); a leading dot is removed from every other line; the size counts every
octet before unstuffing except the final ".<CRLF>"; a line longer than `line_limit` octets with its CRLF gives
"500 Line too long" and a body over `size_limit` "552", whichever happens first, and only after the end marker
(RFC 5321 4.2.5), with everything read meanwhile discarded.

Sans-I/O: `feed` takes bytes and says when the end was seen and what came after it (pipelined commands, which
belong to the command loop).
"""

from __future__ import annotations

import enum

CRLF = b"\r\n"
_END_AFTER_CRLF = b"\r\n.\r\n"


class DataState(enum.Enum):
    NOMINAL = "nominal"
    TOO_LONG = "too-long"  # a line over the line limit: "500 Line too long"
    TOO_MUCH = "too-much"  # over the size limit: "552 Too much mail data"


class DataReader:
    """Collects one DATA body. Feed it the bytes after the 354 reply until `feed` returns the leftover."""

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        """`size_limit`: octets of the body as sent (None or 0: none); `line_limit`: octets of a line with CRLF."""
        self.size_limit = size_limit or None
        self.line_limit = line_limit
        self.state = DataState.NOMINAL
        self.size = 0  # octets received so far, as sent (dot-stuffed), without the final ".<CRLF>"
        self._content = bytearray()
        self._partial = b""  # the start of the current line (no CRLF yet), at most line_limit + 1 octets
        self._mid_line = False  # the current line began before `_partial` (its start was discarded: too long)

    @property
    def content(self) -> bytes:
        """The body, unstuffed (b"" unless the state is NOMINAL)."""
        return bytes(self._content)

    def feed(self, chunk: bytes) -> bytes | None:
        """Take the next bytes of the stream; None while the end marker has not been seen, else what followed it."""
        data = self._partial + chunk if self._partial else chunk
        end = -1
        if not self._mid_line and data.startswith(b".\r\n"):
            end = 0
        else:
            found = data.find(_END_AFTER_CRLF)
            if found >= 0:
                end = found + 2
        if end >= 0:
            self._complete_lines(data[:end])
            self._partial = b""
            self._mid_line = False
            return data[end + 3:]
        cut = data.rfind(CRLF) + 2  # 1 when there is no CRLF: nothing complete yet
        if cut > 1:
            self._complete_lines(data[:cut])
            self._mid_line = False
            rest = data[cut:]
        else:
            rest = data
        self._hold(rest)
        return None

    def _hold(self, rest: bytes) -> None:
        """Keep the unfinished line, or only its last octet (a CR that a LF may complete) once it is too long."""
        if not self._mid_line:
            text_len = len(rest) - (1 if rest.endswith(b"\r") else 0)
            if text_len <= self.line_limit:
                self._partial = rest
                return
            # aiosmtpd's stream reader gives up on a line longer than its limit before counting any of it
            self._set(DataState.TOO_LONG)
        dropped = len(rest) - 1
        self.size += dropped
        self._partial = rest[dropped:]
        self._mid_line = True

    def _complete_lines(self, block: bytes) -> None:
        """Lines that end with CRLF (the first may continue a discarded long line)."""
        if not block:
            return
        if self.state is not DataState.NOMINAL:
            self.size += len(block)
            return
        # the fast path: nothing in this block changes the state
        longest = max(map(len, block.split(CRLF)))
        if longest + len(CRLF) <= self.line_limit and (
                self.size_limit is None or self.size + len(block) <= self.size_limit):
            self.size += len(block)
            self._append_unstuffed(block)
            return
        start = 0
        while start < len(block) and self.state is DataState.NOMINAL:
            stop = block.index(CRLF, start) + len(CRLF)
            self._one_line(block[start:stop])
            start = stop
        self.size += len(block) - start

    def _one_line(self, line: bytes) -> None:
        """One whole line, in aiosmtpd's order of checks (the state is NOMINAL)."""
        if len(line) - len(CRLF) > self.line_limit:  # its reader refuses the line before counting it
            self._set(DataState.TOO_LONG)
            self.size += len(line)
            return
        self.size += len(line)
        if self.size_limit is not None and self.size > self.size_limit:
            self._set(DataState.TOO_MUCH)
        elif len(line) > self.line_limit:
            self._set(DataState.TOO_LONG)
        else:
            self._append_unstuffed(line)

    def _append_unstuffed(self, block: bytes) -> None:
        """RFC 5321 4.5.2: the first dot of every line starting with one is removed (`block` starts a line)."""
        if block.startswith(b"."):
            block = block[1:]
        self._content += block.replace(b"\r\n.", CRLF)

    def _set(self, state: DataState) -> None:
        if self.state is DataState.NOMINAL:
            self.state = state
            self._content = bytearray()  # nothing of it will be used: free it now
