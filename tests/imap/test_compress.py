"""COMPRESS=DEFLATE (RFC 4978) over real sockets: the OK in plain text, deflate both ways after it, one
compression per connection, and a decompression bomb that costs bounded memory and a clean answer."""

from __future__ import annotations

import asyncio
import zlib

import pytest

from recall_lab.fake_servers.imap.compress import INFLATE_STEP, Deflate
from tests.imap.conftest import ALICE, ALICE_PW
from tests.imap.rawclient import Raw


class _Deflated:
    """The client's side of a deflated connection over a Raw client."""

    def __init__(self, raw: Raw) -> None:
        self.raw = raw
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inf = zlib.decompressobj(-15)
        self.buf = b""

    async def send(self, data: bytes) -> None:
        await self.raw.send(self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH))

    async def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = await asyncio.wait_for(self.raw.reader.read(65536), 5)
            if not chunk:
                raise ConnectionError(f"closed; have {self.buf!r}")
            self.buf += self.inf.decompress(chunk)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    async def command(self, tag: bytes, text: bytes) -> list[bytes]:
        await self.send(tag + b" " + text + b"\r\n")
        lines = []
        while True:
            lines.append(await self.line())
            if lines[-1].startswith(tag + b" "):
                return lines


async def _compressed(imap) -> _Deflated:
    raw = await Raw.connect(imap.host, imap.port)
    await raw.command(b"a", f"LOGIN {ALICE} {ALICE_PW}".encode())
    reply = await raw.command(b"z", b"COMPRESS DEFLATE")
    assert reply == [b"z OK DEFLATE active.\r\n"]
    return _Deflated(raw)


async def _close(raw: Raw) -> None:
    raw.writer.close()
    await asyncio.gather(raw.writer.wait_closed(), return_exceptions=True)


async def test_capability_and_deflated_session(imap) -> None:
    for n in range(3):
        imap.deliver(n)
    client = await _compressed(imap)
    try:
        assert (await client.command(b"s", b"SELECT INBOX"))[-1].startswith(b"s OK")
        fetched = await client.command(b"f", b"FETCH 1:* (UID BODY.PEEK[])")
        assert sum(line.startswith(b"* ") and b"FETCH" in line for line in fetched) == 3
        caps = b"".join(await client.command(b"c", b"CAPABILITY"))
        assert b"COMPRESS=DEFLATE" in caps
        assert (await client.command(b"y", b"COMPRESS DEFLATE"))[-1].startswith(b"y NO [COMPRESSIONACTIVE]")
    finally:
        await _close(client.raw)


async def test_not_before_login_and_unknown_mechanism(imap) -> None:
    raw = await Raw.connect(imap.host, imap.port)
    try:
        assert (await raw.command(b"z", b"COMPRESS DEFLATE"))[-1].startswith(b"z BAD")
        await raw.command(b"a", f"LOGIN {ALICE} {ALICE_PW}".encode())
        assert (await raw.command(b"z", b"COMPRESS LZMA"))[-1].startswith(b"z BAD")
    finally:
        await _close(raw)


async def test_decompression_bomb_is_bounded(imap) -> None:
    """64 MB of zeros in one command line deflate to ~64 KB: the server inflates it in bounded steps, refuses the
    over-long line without buffering it, and answers the next command."""
    client = await _compressed(imap)
    try:
        bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = bomb.compress(b"x1 NOOP ")
        zeros = b"0" * (1 << 20)
        for _ in range(64):
            data += bomb.compress(zeros)
        data += bomb.compress(b"\r\nx2 NOOP\r\n") + bomb.flush(zlib.Z_SYNC_FLUSH)
        assert len(data) < 200_000
        client.out = bomb
        await client.raw.send(data)
        lines = []
        while not lines or not lines[-1].startswith(b"x2 "):
            lines.append(await client.line())
        assert any(b"BAD" in line for line in lines), lines
        assert lines[-1].startswith(b"x2 OK")
    finally:
        await _close(client.raw)


async def test_corrupt_stream_closes_the_connection(imap) -> None:
    client = await _compressed(imap)
    try:
        await client.raw.send(b"\xff" * 64)
        assert await asyncio.wait_for(client.raw.reader.read(), 5) == b""
    finally:
        await _close(client.raw)


def test_inflate_step_is_bounded() -> None:
    deflate = Deflate()
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflate.received(packer.compress(b"\0" * (8 << 20)) + packer.flush(zlib.Z_SYNC_FLUSH))
    total = 0
    while deflate.has_pending:
        step = deflate.inflate_step()
        assert len(step) <= INFLATE_STEP
        total += len(step)
    assert total == 8 << 20
    with pytest.raises(zlib.error):
        bad = Deflate()
        bad.received(b"\xff" * 16)
        bad.inflate_step()
