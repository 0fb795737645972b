"""Shared fixtures: an ImapServer on 127.0.0.1:0 over a MemoryStore holding the lab's default users."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.server import ImapServer
from recall_lab.fake_servers.store.memory import MemoryStore

USERS = {
    "alice@corp.example": "alice-password",
    "bob@corp.example": "bob-password",
    "carol@corp.example": "carol-password",
    "dave@mail.example": "dave-password",
    "erin@mail.example": "erin-password",
}
ALICE = "alice@corp.example"
ALICE_PW = USERS[ALICE]


def make_message(n: int, subject: str | None = None, to: str = ALICE, body: str | None = None) -> bytes:
    subject = subject if subject is not None else f"message {n}"
    body = body if body is not None else f"Body of message {n}.\n"
    text = (f"Date: Tue, 24 Nov 2026 09:{n % 60:02d}:00 +0100\n"
            f"From: Bob Example <bob@corp.example>\n"
            f"To: {to}\n"
            f"Subject: {subject}\n"
            f"Message-ID: <msg-{n}@corp.example>\n"
            f"MIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=utf-8\n"
            f"\n{body}")
    return text.replace("\n", "\r\n").encode("utf-8")


@dataclass
class Lab:
    server: ImapServer
    store: MemoryStore
    accounts: Accounts

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    def deliver(self, n: int, user: str = ALICE, **kw) -> int:
        return self.store.deliver(user, make_message(n, **kw)).uid


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    return store


@pytest.fixture
def accounts() -> Accounts:
    return Accounts(USERS)


@pytest.fixture
async def imap(store: MemoryStore, accounts: Accounts):
    """A running server; `imap.deliver(n)` puts message n into alice's INBOX."""
    server = ImapServer(store, accounts, name="corp.example")
    await server.start()
    try:
        yield Lab(server, store, accounts)
    finally:
        await server.stop()
