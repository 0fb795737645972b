"""COMPRESS=DEFLATE (RFC 4978): the connection's bytes deflated both ways after the tagged OK.

Why: a full-mailbox sync is mostly header and body text, which deflate shrinks several times
(scripts/bench_compress.py measures it); slow links and metered clients ask for it.

Why the inflater is bounded: a few kilobytes of deflate can inflate to gigabytes (a decompression bomb). The
adapter (server.py) inflates at most `INFLATE_STEP` octets per step, feeds them to the session, and inflates
more only when the session has taken them (it is not backlogged); what is not inflated yet stays compressed,
and reading from the socket stops meanwhile. So memory is bounded by the socket buffers, whatever the ratio.

The session (sans-I/O) only answers the command; turning compression on is the adapter's (`SessionIO`'s
optional `start_compression()`), called after the tagged OK has been handed over, uncompressed.
"""

from __future__ import annotations

import zlib

from .errors import CommandFailed, ParseError
from .lexer import Lexer
from .state import SessionCore

#: The most octets inflated from the client's input before the session has to take them.
INFLATE_STEP = 64 * 1024


class Deflate:
    """One connection's raw deflate streams (RFC 1951, no zlib header, as RFC 4978 says)."""

    def __init__(self) -> None:
        self._out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._in = zlib.decompressobj(-15)
        self._pending = b""  # compressed input not inflated yet
        self.sent_plain = 0
        self.sent_wire = 0

    def compress(self, data: bytes) -> bytes:
        """`data` deflated and flushed to a byte boundary (the client can read it at once)."""
        wire = self._out.compress(data) + self._out.flush(zlib.Z_SYNC_FLUSH)
        self.sent_plain += len(data)
        self.sent_wire += len(wire)
        return wire

    def received(self, data: bytes) -> None:
        """Compressed bytes from the client, inflated later by `inflate_step`."""
        self._pending += data

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def inflate_step(self) -> bytes:
        """At most INFLATE_STEP inflated octets (raises zlib.error on a corrupt stream)."""
        if not self._pending:
            return b""
        plain = self._in.decompress(self._pending, INFLATE_STEP)
        self._pending = self._in.unconsumed_tail
        return plain


class CompressCommand(SessionCore):
    """COMPRESS DEFLATE (a mixin of ImapSession)."""

    compression_active: bool = False

    def cmd_compress(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        mechanism = lx.atom("compression mechanism").upper()
        lx.end()
        if mechanism != "DEFLATE":
            raise ParseError(f"Unknown compression mechanism {mechanism[:20]}")
        if self.compression_active:
            raise CommandFailed("DEFLATE is already active", "COMPRESSIONACTIVE")
        start = getattr(self.io, "start_compression", None)  # type: ignore[attr-defined]
        if start is None:
            raise CommandFailed("Compression is not available on this connection", "CANNOT")
        self.ok(tag, "DEFLATE active.")
        self._flush()  # type: ignore[attr-defined]  # the OK goes out uncompressed
        # What the client sent after COMPRESS before our OK cannot be compressed data (RFC 4978 3): dropped.
        self.framer.reset()  # type: ignore[attr-defined]
        self._drop_work()  # type: ignore[attr-defined]
        self.compression_active = True
        start()
