#!/usr/bin/env python3
"""What COMPRESS=DEFLATE (RFC 4978) saves on a full-mailbox sync: octets on the wire with and without it.

Why: deflate costs CPU on both ends; whether it is worth it depends on how much a sync of real-looking mail
shrinks. The script fills one INBOX with N generated messages (headers, a quoted-printable text part, some
with a small base64 attachment), then syncs it the way a desktop client does (SELECT, UID FETCH 1:* (UID FLAGS),
UID FETCH 1:* BODY.PEEK[]) over one plain connection and one deflated connection, counting the octets the
server sent on the socket, and prints both and the ratio.

    python scripts/bench_compress.py --messages 500 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import time
import zlib

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.server import ImapServer
from recall_lab.fake_servers.store.memory import MemoryStore

USER, PASSWORD = "alice@corp.example", "alice-password"
_WORDS = ("recall message meeting report budget quarter project review draft please attached thanks regards "
          "schedule update team customer invoice contract deadline follow question answer week").split()


def message(n: int, rng: random.Random) -> bytes:
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(60, 400)))
    lines = [words[i:i + 72] for i in range(0, len(words), 72)]
    head = (f"Date: Tue, 24 Nov 2026 09:{n % 60:02d}:00 +0100\r\nFrom: Bob Example <bob@corp.example>\r\n"
            f"To: Alice <{USER}>\r\nSubject: {' '.join(rng.choice(_WORDS) for _ in range(5))}\r\n"
            f"Message-ID: <bench-{n}@corp.example>\r\nMIME-Version: 1.0\r\n")
    text = "\r\n".join(lines)
    if n % 5:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n").encode()
    blob = base64.encodebytes(rng.randbytes(3000)).decode().replace("\n", "\r\n")
    return (head + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
            + text + '\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            + blob + "--b--\r\n").encode()


class _Conn:
    """A minimal IMAP client that counts the octets received, deflated or not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.wire = 0
        self.inflate: zlib._Decompress | None = None
        self.deflate: zlib._Compress | None = None
        self.buf = b""
        self.tag = 0

    async def _fill(self) -> None:
        chunk = await self.reader.read(1 << 16)
        if not chunk:
            raise ConnectionError("closed")
        self.wire += len(chunk)
        self.buf += self.inflate.decompress(chunk) if self.inflate else chunk

    async def command(self, text: str) -> None:
        self.tag += 1
        tag = b"t%d " % self.tag
        data = tag + text.encode() + b"\r\n"
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.writer.write(data)
        while True:  # read up to the tagged reply (literals are skipped by their counts)
            pos = 0
            while True:
                end = self.buf.find(b"\r\n", pos)
                if end < 0:
                    break
                line = self.buf[pos:end]
                if line.endswith(b"}") and b"{" in line:
                    size = int(line[line.rindex(b"{") + 1:-1])
                    if len(self.buf) < end + 2 + size:
                        break
                    pos = end + 2 + size
                    continue
                pos = end + 2
                if line.startswith(tag):
                    self.buf = self.buf[pos:]
                    if not line[len(tag):].startswith(b"OK"):
                        raise RuntimeError(line.decode())
                    return
            await self._fill()


async def sync(host: str, port: int, compress: bool) -> tuple[int, float]:
    reader, writer = await asyncio.open_connection(host, port)
    conn = _Conn(reader, writer)
    while b"\r\n" not in conn.buf:
        await conn._fill()
    conn.buf = b""
    await conn.command(f"LOGIN {USER} {PASSWORD}")
    if compress:
        await conn.command("COMPRESS DEFLATE")
        conn.inflate, conn.deflate = zlib.decompressobj(-15), zlib.compressobj(6, zlib.DEFLATED, -15)
    start, before = time.perf_counter(), conn.wire
    await conn.command("SELECT INBOX")
    await conn.command("UID FETCH 1:* (UID FLAGS)")
    await conn.command("UID FETCH 1:* BODY.PEEK[]")
    took = time.perf_counter() - start
    sent = conn.wire - before
    await conn.command("LOGOUT")
    writer.close()
    return sent, took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    store = MemoryStore()
    store.ensure_user(USER)
    raw_size = 0
    for n in range(args.messages):
        data = message(n, rng)
        raw_size += len(data)
        store.deliver(USER, data)
    server = ImapServer(store, Accounts({USER: PASSWORD}), port=0)
    await server.start()
    try:
        plain, plain_s = await sync(server.host, server.port, compress=False)
        deflated, deflated_s = await sync(server.host, server.port, compress=True)
    finally:
        await server.stop()
    result = {"messages": args.messages, "message_octets": raw_size, "plain_octets": plain,
              "deflate_octets": deflated, "ratio": round(plain / deflated, 2),
              "plain_seconds": round(plain_s, 3), "deflate_seconds": round(deflated_s, 3)}
    print(f"{args.messages} messages ({raw_size:,} octets): plain {plain:,} octets in {plain_s:.2f} s, "
          f"deflate {deflated:,} octets in {deflated_s:.2f} s, {result['ratio']}x fewer octets")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    asyncio.run(main())
