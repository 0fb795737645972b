"""Small SMTP and IMAP helpers for the SMTP, lab and CLI tests."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import imapclient

from recall_lab.harness.lab import Endpoint, Lab


class LineClient:
    """A raw SMTP client: what tests need to see exact replies, send malformed lines and pipeline."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, ep: Endpoint) -> LineClient:
        reader, writer = await asyncio.open_connection(ep.host, ep.port)
        client = cls(reader, writer)
        greeting = await client.reply()
        assert greeting.startswith("220"), greeting
        return client

    @classmethod
    @asynccontextmanager
    async def session(cls, ep: Endpoint) -> AsyncIterator[LineClient]:
        """A connected client (greeting read), closed when the block ends, whatever happened in it."""
        client = await cls.connect(ep)
        try:
            yield client
        finally:
            await client.close()

    async def reply(self) -> str:
        """One (possibly multi-line) reply, lines joined with \n."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            if not line:
                raise ConnectionError("server closed the connection")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\n".join(lines)

    async def cmd(self, line: str | bytes) -> str:
        data = line if isinstance(line, bytes) else line.encode()
        self.writer.write(data + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def ehlo(self) -> str:
        return await self.cmd("EHLO client.test")

    async def login(self, user: str, password: str) -> str:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return await self.cmd(f"AUTH PLAIN {token}")

    async def data(self, raw: bytes) -> str:
        reply = await self.cmd("DATA")
        assert reply.startswith("354"), reply
        body = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        lines = [b"." + ln if ln.startswith(b".") else ln for ln in body.split(b"\r\n")]
        if lines and lines[-1] == b"":
            lines.pop()
        self.writer.write(b"\r\n".join(lines) + b"\r\n.\r\n")
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def message(sender: str, to: str, subject: str = "hello", body: str = "hi there\r\n",
            extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}\r\n{body}").encode()


def _imap_fetch(ep: Endpoint, user: str, password: str, mailbox: str) -> list[tuple[bytes, tuple]]:
    with imapclient.IMAPClient(ep.host, ep.port, ssl=False, timeout=10) as client:
        client.login(user, password)
        client.select_folder(mailbox, readonly=True)
        uids = client.search("ALL")
        if not uids:
            return []
        data = client.fetch(uids, ["BODY.PEEK[]", "FLAGS"])
        return [(data[uid][b"BODY[]"], data[uid][b"FLAGS"]) for uid in sorted(data)]


async def imap_messages(lab: Lab, user: str, mailbox: str = "INBOX") -> list[bytes]:
    """Every message of the mailbox, read over IMAP with imapclient (in a thread: it blocks)."""
    ep = lab.imap(lab.domain_of(user))
    rows = await asyncio.to_thread(_imap_fetch, ep, user, lab.password(user), mailbox)
    return [raw for raw, _ in rows]


async def imap_rows(lab: Lab, user: str, mailbox: str = "INBOX") -> list[tuple[bytes, tuple]]:
    ep = lab.imap(lab.domain_of(user))
    return await asyncio.to_thread(_imap_fetch, ep, user, lab.password(user), mailbox)


class ScriptedServer:
    """A bare aiosmtpd server in the test's loop whose DATA replies follow a script (then 250 forever).

    Stands for "another provider" that is down, busy (4xx) or refusing (5xx), reached through lab.set_route.
    """

    def __init__(self, data_replies: list[str] | None = None, rcpt_replies: list[str] | None = None, *,
                 tls: ssl.SSLContext | None = None, starttls_reply: str | None = None, esmtp: bool = True) -> None:
        self.data_replies = list(data_replies or [])
        self.rcpt_replies = list(rcpt_replies or [])
        self.tls = tls  # offer STARTTLS with this (server) context
        self.starttls_reply = starttls_reply  # answer STARTTLS with this instead of starting TLS (e.g. a 454)
        self.received: list[tuple[str, list[str], bytes]] = []
        self.received_over_tls: list[bool] = []
        self.starttls_refused = 0
        self.esmtp = esmtp  # False: a pre-ESMTP server that answers EHLO with 502 (HELO only)
        self.attempts = 0
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.attempts += 1
        if self.data_replies:
            return self.data_replies.pop(0)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        self.received_over_tls.append(session.ssl is not None)
        self.arrived.set()
        return "250 2.0.0 OK"

    async def start(self) -> None:
        from aiosmtpd.smtp import SMTP

        scripted = self

        class Session(SMTP):
            async def smtp_EHLO(self, hostname: str) -> None:
                if scripted.esmtp:
                    return await super().smtp_EHLO(hostname)
                await self.push("502 5.5.1 Command not implemented")

            async def smtp_STARTTLS(self, arg: str) -> None:
                if scripted.starttls_reply is None:
                    return await super().smtp_STARTTLS(arg)
                scripted.starttls_refused += 1
                await self.push(scripted.starttls_reply)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Session(self, hostname="scripted.test", enable_SMTPUTF8=True, tls_context=self.tls, loop=loop),
            "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
