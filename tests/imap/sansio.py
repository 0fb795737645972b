"""Driving an ImapSession without a socket: bytes in, bytes out."""

from __future__ import annotations

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap.session import ImapSession, SessionConfig
from recall_lab.fake_servers.store.base import MailStore


class FakeIO:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.tls_requested = False

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def start_tls(self) -> None:
        self.tls_requested = True


class Client:
    """A session plus its output; `send` returns what the server wrote in answer."""

    def __init__(self, store: MailStore, accounts: Accounts, **config) -> None:
        self.io = FakeIO()
        self.session = ImapSession(store, accounts, self.io, SessionConfig(**config))
        self.session.greeting()
        self.greeting = self.take()

    def take(self) -> bytes:
        data = bytes(self.io.out)
        self.io.out.clear()
        return data

    def send(self, data: bytes | str) -> bytes:
        if isinstance(data, str):
            data = data.encode()
        if not data.endswith(b"\n"):
            data += b"\r\n"
        self.session.feed(data)
        return self.take()

    def login(self, user: str = "alice@corp.example", password: str = "alice-password") -> bytes:
        out = self.send(f"l1 LOGIN {user} {password}")
        assert b"l1 OK" in out, out
        return out


def selected_client(store: MailStore, accounts: Accounts) -> Client:
    """A client logged in as alice (Client.login's default), with her INBOX selected."""
    c = Client(store, accounts)
    c.login()
    c.send("s SELECT INBOX")
    return c


def response_lines(out: bytes) -> list[str]:
    """What the server wrote, one CRLF-terminated line per item (the last, empty piece dropped)."""
    return out.decode().split("\r\n")[:-1]
