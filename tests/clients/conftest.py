"""Fixtures for the client emulator tests: a mail server (the lab's own or Dovecot) and a second session.

`server` is parametrised over both: the emulators must work with a real IMAP server, not only with ours.
Dovecot runs once per xdist worker (a start costs about a second); each test gets a fresh account on it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest

from recall_lab.harness.clients.connection import ImapConnection

_counter = itertools.count()


def make_message(mid: str, subject: str = "Quarterly numbers", body: str = "Please find the numbers below.\n",
                 sender: str = "alice@corp.example", to: str = "bob@corp.example") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = mid if mid.startswith("<") else f"<{mid}>"
    msg.set_content(body)
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def new_mid(tag: str = "m") -> str:
    return f"<{tag}-{os.getpid()}-{next(_counter)}@corp.example>"


@dataclass
class MailServer:
    """One IMAP account to test a client against, plus how to reach it."""

    kind: str  # "lab" | "dovecot"
    imap: tuple[str, int]
    user: str
    password: str
    lab: Any = None

    async def session(self) -> Mailbox:
        conn = await ImapConnection(self.imap[0], self.imap[1], self.user, self.password).open()
        return Mailbox(conn)


class Mailbox:
    """A second session of the same user: "another device" or "the server side" in a test."""

    def __init__(self, conn: ImapConnection) -> None:
        self.conn = conn
        self.selected: str | None = None

    async def _select(self, folder: str) -> None:
        if self.selected != folder:
            await self.conn.select(folder)
            self.selected = folder

    async def append(self, raw: bytes, folder: str = "INBOX", flags: tuple[str, ...] = ()) -> None:
        await self.conn.append(raw, folder, flags)

    async def uids(self, mid: str, folder: str = "INBOX") -> list[int]:
        from recall_lab.harness.clients.cache import search_quoted

        await self._select(folder)
        await self.conn.noop()
        return await self.conn.uid_search("HEADER", "Message-ID", search_quoted(mid))

    async def expunge(self, mid: str, folder: str = "INBOX") -> None:
        uids = await self.uids(mid, folder)
        assert uids, f"{mid} not in {folder}"
        uid_set = ",".join(map(str, uids))
        await self.conn.uid_store(uid_set, "+FLAGS.SILENT", r"(\Deleted)")
        await self.conn.uid_expunge(uid_set)

    async def flags(self, mid: str, folder: str = "INBOX") -> frozenset[str]:
        uids = await self.uids(mid, folder)
        assert uids, f"{mid} not in {folder}"
        records = await self.conn.uid_fetch(str(uids[0]), "(UID FLAGS)")
        return records[0].flags or frozenset()

    async def store(self, mid: str, action: str, flags: str, folder: str = "INBOX") -> None:
        uids = await self.uids(mid, folder)
        await self.conn.uid_store(",".join(map(str, uids)), action, flags)

    async def create(self, folder: str) -> None:
        await self.conn.create(folder)

    async def close(self) -> None:
        await self.conn.logout()


@pytest.fixture(scope="session")
def dovecot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from recall_lab.harness.dovecot import DovecotServer, DovecotUnavailable, dovecot_binary

    if dovecot_binary() is None:
        pytest.skip("dovecot not installed")
    server = DovecotServer(tmp_path_factory.mktemp("dovecot"), {"nobody-yet@corp.example": "x"})
    try:
        server.start()
    except DovecotUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
async def lab() -> AsyncIterator[Any]:
    from recall_lab.harness.lab import Lab

    async with Lab(store="memory") as running:
        yield running


@pytest.fixture
async def legacy_lab() -> AsyncIterator[Any]:
    """corp.example in the legacy recall mode: the server delivers recalls, the desktop client acts."""
    from recall_lab.harness.config import default_config
    from recall_lab.harness.lab import Lab

    config = default_config()
    config.domain("corp.example").policies["recall_mode"] = "legacy"
    async with Lab(config, store="memory") as running:
        yield running


@pytest.fixture(params=["lab", "dovecot"])
def server(request: pytest.FixtureRequest) -> MailServer:
    if request.param == "lab":
        running = request.getfixturevalue("lab")
        endpoint = running.imap("corp.example")
        return MailServer("lab", (endpoint.host, endpoint.port), "bob@corp.example", "bob-password", running)
    dovecot = request.getfixturevalue("dovecot_server")
    user = f"u{os.getpid()}x{next(_counter)}@corp.example"
    dovecot.add_user(user, "pw")
    return MailServer("dovecot", (dovecot.host, dovecot.port), user, "pw")


@pytest.fixture
async def other(server: MailServer) -> AsyncIterator[Mailbox]:
    box = await server.session()
    yield box
    await box.close()
