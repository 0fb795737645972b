"""The two IMAP servers every peer test runs against, behind one small shape (`ImapEndpoint`).

Why a thread for recall-lab's server: the peers are blocking programs run with subprocess, so the tests are
synchronous; our asyncio server gets its own event loop in a background thread, started and stopped per test.
Dovecot is shared by a whole test session (starting and stopping it costs ~1 s); each test gets a fresh
account on it instead, so tests stay independent (and safe under pytest-xdist: one Dovecot per worker).
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from recall_lab.harness.dovecot import DovecotServer

#: The two servers, in the order tests are parametrised.
SERVER_KINDS = ("dovecot", "recall-lab")


@dataclass(frozen=True)
class ImapEndpoint:
    """Where a test's account lives: which server, its address, and one user with password."""

    kind: str
    host: str
    port: int
    user: str
    password: str

    @property
    def url(self) -> str:
        return f"imap://{self.host}:{self.port}"


class ThreadedRecallLabServer:
    """recall-lab's ImapServer on 127.0.0.1:0, running on an event loop of its own, over a MemoryStore or (with
    `maildir`) a MaildirStore in that directory."""

    def __init__(self, users: Mapping[str, str], maildir: Path | None = None,
                 ssl_context: ssl.SSLContext | None = None, login_disabled_without_tls: bool = False) -> None:
        self.users = dict(users)
        self.maildir = maildir
        self.ssl_context = ssl_context
        self.login_disabled_without_tls = login_disabled_without_tls
        self.host = "127.0.0.1"
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self.store = None

    async def _start(self) -> None:
        from recall_lab.fake_servers.accounts import Accounts
        from recall_lab.fake_servers.imap.server import ImapServer
        from recall_lab.fake_servers.store import MaildirStore, MemoryStore

        self.store = MaildirStore(self.maildir) if self.maildir is not None else MemoryStore()
        accounts = Accounts(self.users)
        for user in accounts:
            self.store.ensure_user(user)
        self._server = ImapServer(self.store, accounts, host=self.host, port=0, ssl_context=self.ssl_context,
                                  login_disabled_without_tls=self.login_disabled_without_tls)
        await self._server.start()
        self.port = self._server.port

    def start(self) -> ThreadedRecallLabServer:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="recall-lab-imap", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            if self._server is not None:
                asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout=10)
        finally:
            self._shutdown_loop()
            if self.store is not None:
                self.store.close()

    def endpoint(self, user: str | None = None) -> ImapEndpoint:
        """Where a client finds `user` (default: the first account) on this running server."""
        user = user or next(iter(self.users))
        return ImapEndpoint("recall-lab", self.host, self.port, user, self.users[user])

    def _shutdown_loop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()


class SharedDovecot:
    """One Dovecot per test session, started on first use; `account()` hands out a fresh user each time.
    `options` go to DovecotServer (e.g. tls=...)."""

    def __init__(self, root: Path, **options: object) -> None:
        self._root = root
        self._options = options
        self._server: DovecotServer | None = None
        self._counter = itertools.count(1)

    def account(self, localpart: str = "user") -> ImapEndpoint:
        if self._server is None:
            self._server = DovecotServer(self._root, {}, **self._options).start()
        n = next(self._counter)
        user, password = f"{localpart}{n}@corp.example", f"{localpart}{n}-password"
        self._server.add_user(user, password)
        return ImapEndpoint("dovecot", self._server.host, self._server.port, user, password)

    def log(self) -> str:
        return self._server.log() if self._server else ""

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
