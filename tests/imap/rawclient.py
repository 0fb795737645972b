"""A bare asyncio line client for the tests that must send what no library would."""

from __future__ import annotations

import asyncio


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, **kw) -> Raw:
        reader, writer = await asyncio.open_connection(host, port, **kw)
        raw = cls(reader, writer)
        greeting = await raw.line()
        assert greeting.startswith(b"* OK"), greeting
        return raw

    async def line(self, timeout: float = 5) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), timeout)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_tagged(self, tag: bytes, timeout: float = 5) -> list[bytes]:
        lines = []
        while True:
            line = await self.line(timeout)
            if not line:
                raise ConnectionError(f"closed while waiting for {tag!r}; got {lines!r}")
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    async def command(self, tag: bytes, text: bytes) -> list[bytes]:
        await self.send(tag + b" " + text + b"\r\n")
        return await self.until_tagged(tag)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
