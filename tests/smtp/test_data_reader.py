"""The SMTP DATA reader: aiosmtpd's meaning, bounded memory.

Why these tests: `LabSMTP.smtp_DATA` replaces aiosmtpd's reader (one object per body line: a 10 MB body of empty
lines cost ~500 MB before the size limit looked at it). A replacement reader is where SMTP smuggling and lost
mail come from, so hypothesis runs stock aiosmtpd and LabSMTP on the same bytes over real sockets and asks for
the same replies and byte-identical content, for any body, including bare CR/LF, dots, over-long lines and
over-size bodies, followed by pipelined commands. The sans-I/O reader must not depend on how the network cut
the stream, and its memory must not depend on how many lines a body has.
"""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.smtp.data_reader import DataReader, DataState
from recall_lab.fake_servers.smtp.protocol import LabSMTP, with_enhanced_code


class _Capture:
    """A handler that accepts every message and keeps what DATA delivered."""

    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.original_content, bytes)
        self.contents.append(envelope.original_content)
        return "250 2.0.0 captured"


async def _session(cls: type[SMTP], line_limit: int, size_limit: int | None, sent: bytes) -> tuple[list[str], list[bytes]]:
    """Run one SMTP session of `cls` over a socket pair; (reply lines, DATA contents)."""
    handler = _Capture()

    class Session_(cls):  # type: ignore[valid-type, misc]
        line_length_limit = line_limit

    loop = asyncio.get_running_loop()
    server_sock, client_sock = socket.socketpair()
    kwargs: dict[str, Any] = {"data_size_limit": size_limit, "hostname": "lab.example", "loop": loop,
                              "timeout": 30}
    await loop.connect_accepted_socket(lambda: Session_(handler, **kwargs), server_sock)
    reader, writer = await asyncio.open_connection(sock=client_sock)

    async def send() -> None:
        writer.write(sent)
        await writer.drain()

    sender = asyncio.create_task(send())
    received = await asyncio.wait_for(reader.read(-1), 30)  # the server closes after QUIT (or bogus commands)
    sender.cancel()
    writer.close()
    return received.decode().split("\r\n"), handler.contents


def _both(body: bytes, line_limit: int, size_limit: int | None) -> tuple[Any, Any]:
    sent = (b"HELO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n" + body
            + b"\r\n.\r\nQUIT\r\n")

    async def run() -> tuple[Any, Any]:
        stock = await _session(SMTP, line_limit, size_limit, sent)
        lab = await _session(LabSMTP, line_limit, size_limit, sent)
        return stock, lab

    (stock_replies, stock_contents), (lab_replies, lab_contents) = asyncio.run(run())
    return ([with_enhanced_code(r) for r in stock_replies], stock_contents), (lab_replies, lab_contents)


_PIECES = st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"x", b"y.", b"\r\n.", b".\r\n", b"\r\n.\r\n",
                           b"\r\n..\r\n", b"\n.\n", b"\r.\r", b"NOOP\r\n", b"\x00", "é".encode()])
_LONG = st.integers(20, 90).map(lambda n: b"L" * n)
_BODIES = st.lists(st.one_of(_PIECES, _PIECES, _PIECES, _LONG), max_size=60).map(b"".join)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_BODIES, line_limit=st.sampled_from([40, 48, 64, 1001]),
       size_limit=st.one_of(st.none(), st.just(0), st.integers(1, 400)))
@example(body=b"", line_limit=1001, size_limit=None)
@example(body=b".\r\n", line_limit=1001, size_limit=None)
@example(body=b"..\r\n.x\r\n" + b"L" * 999 + b"\r\n" + b"M" * 1000, line_limit=1001, size_limit=None)
@example(body=b"L" * 1001 + b"\r\n" + b"M" * 1002, line_limit=1001, size_limit=None)
@example(body=b"x\r\n" * 10 + b"L" * 80, line_limit=40, size_limit=25)
@example(body=b"x\n.\nMAIL FROM:<e@f.example>\r\n", line_limit=1001, size_limit=None)
def test_lab_reads_data_exactly_as_aiosmtpd(body: bytes, line_limit: int, size_limit: int | None) -> None:
    stock, lab = _both(body, line_limit, size_limit)
    assert lab == stock


def _feed_all(pieces: list[bytes], size_limit: int | None, line_limit: int) -> tuple[Any, ...]:
    reader = DataReader(size_limit, line_limit)
    leftover = None
    for i, piece in enumerate(pieces):
        leftover = reader.feed(piece)
        if leftover is not None:
            leftover += b"".join(pieces[i + 1:])
            break
    return reader.state, reader.size, reader.content, leftover


@settings(max_examples=300, deadline=None)
@given(body=_BODIES, cuts=st.lists(st.integers(0, 400), max_size=12),
       line_limit=st.sampled_from([8, 40, 1001]), size_limit=st.one_of(st.none(), st.integers(1, 300)))
def test_reader_does_not_depend_on_how_the_stream_was_cut(body: bytes, cuts: list[int], line_limit: int,
                                                          size_limit: int | None) -> None:
    stream = body + b"\r\n.\r\nrest"
    points = sorted({c for c in cuts if c < len(stream)} | {0, len(stream)})
    pieces = [stream[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]
    assert _feed_all(pieces, size_limit, line_limit) == _feed_all([stream], size_limit, line_limit)


def test_smuggling_line_ends_do_not_end_the_body() -> None:
    """Only CRLF.CRLF ends DATA: <LF>.<LF>, <CR>.<CR>, <LF>.<CRLF> and <CR>.<CRLF> are content."""
    for fake_end in (b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r"):
        reader = DataReader(None, 1001)
        assert reader.feed(b"a" + fake_end + b"MAIL FROM:<x@evil.example>\r\n") is None, fake_end
        assert reader.feed(b"\r\n.\r\nNEXT") == b"NEXT"
        unstuffed = (b"a" + fake_end).replace(b"\r\n.", b"\r\n")  # a dot that starts a line is stuffing
        assert reader.content.startswith(unstuffed + b"MAIL FROM:"), fake_end


def test_memory_does_not_depend_on_the_number_of_lines() -> None:
    """10 MB of empty lines, fed in 256 KiB reads: peak allocation a small multiple of the content."""
    size = 10_000_000
    read = b"\r\n" * (1 << 17)
    tracemalloc.start()
    try:
        reader = DataReader(size + 1, 1001)
        for _ in range(size // len(read)):
            assert reader.feed(read) is None
        assert reader.feed(b".\r\n") == b""
        content = reader.content
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reader.state is DataState.NOMINAL and len(content) == size // len(read) * len(read)
    assert peak < 4 * size, f"peak {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB body"


def test_an_over_size_body_is_not_kept() -> None:
    reader = DataReader(1000, 1001)
    for _ in range(100):
        assert reader.feed(b"x" * 998 + b"\r\n") is None
    assert reader.state is DataState.TOO_MUCH and reader.content == b""
    assert len(reader._content) == 0
    assert reader.feed(b".\r\n") == b""
    assert reader.size == 100_000


def test_an_endless_line_is_not_kept() -> None:
    reader = DataReader(None, 1001)
    for _ in range(1000):
        assert reader.feed(b"x" * 10_000) is None
    assert reader.state is DataState.TOO_LONG
    assert len(reader._partial) <= 1
    assert reader.feed(b"\r\n.\r\n") == b""
    assert reader.size == 10_000_002
