"""The asyncio adapter: a listening socket whose connections each drive one sans-I/O ImapSession.

Why asyncio.Protocol and not streams: the session is synchronous, so bytes go straight from data_received into
the session and its whole answer out in one transport.write, with no task per connection and nothing to leak
when a client vanishes. Timers give the inactivity timeouts (60 s before login, 30 min after, by default).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl

from ..accounts import Accounts
from ..store.base import MailStore
from ..transcript import TranscriptRecorder
from .session import NOT_AUTHENTICATED, ImapSession, SessionConfig
from .view_cache import ViewCache

log = logging.getLogger("fake_servers.imap")

#: Pause reading from a client while this much output waits to be sent (a slow reader of a big FETCH).
_HIGH_WATER = 4 * 1024 * 1024


class _Connection(asyncio.Protocol):
    def __init__(self, server: ImapServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session: ImapSession | None = None
        self.peer = "?"
        self._timer: asyncio.TimerHandle | None = None
        self._tls_task: asyncio.Task | None = None
        #: Decrypted bytes the TLS layer handed over before the handshake task resumed (None: not in STARTTLS).
        self._tls_early: list[bytes] | None = None
        self._closing = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        srv = self.server
        self.session = ImapSession(srv.store, srv.accounts, self, srv.config, srv.cache, tls_active=False,
                                   transcript=srv.transcripts, peer=self.peer)
        srv._connections.add(self)
        self.session.greeting()
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None or self._closing:
            return
        if session.io_paused:
            # Raw reading is paused from STARTTLS on, so plaintext a client sent before the handshake never gets
            # here (RFC 3501 6.2.1). What does arrive now came through TLS: a client may speak as soon as the
            # handshake completes, before the task awaiting loop.start_tls has resumed. Keep it for then.
            if self._tls_early is not None:
                self._tls_early.append(data)
            return
        session.feed(data)
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        session = self.session
        if session is not None and not session.closed:
            if session.framer.in_literal:
                log.info("IMAP %s: client went away in the middle of a literal", self.peer)
            elif session.idle_tag is not None:
                log.info("IMAP %s: client went away while idling", self.peer)
            else:
                log.info("IMAP %s: client closed the connection", self.peer)
            session.shutdown()
        self._cancel_timer()
        self._closing = True
        if self._tls_task is not None and not self._tls_task.done():
            self._tls_task.cancel()
        self.server._connections.discard(self)

    def pause_writing(self) -> None:
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()

    # -- SessionIO ----------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self._closing = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    def start_tls(self) -> None:
        assert self.transport is not None
        # Stop reading now, not when the task runs: the client's ClientHello must reach the TLS layer, not us.
        self.transport.pause_reading()
        self._tls_early = []
        self._tls_task = asyncio.get_running_loop().create_task(self._start_tls())

    async def _start_tls(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.transport is not None and self.server.ssl_context is not None
        try:
            new = await loop.start_tls(self.transport, self, self.server.ssl_context, server_side=True,
                                       ssl_handshake_timeout=30)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("IMAP %s: TLS handshake failed: %s", self.peer, exc)
            self.close()
            if self.session is not None:
                self.session.shutdown()
            return
        except asyncio.CancelledError:
            return
        if new is None:
            return
        self.transport = new  # type: ignore[assignment]
        early, self._tls_early = self._tls_early or [], None
        if self.session is not None:
            self.session.tls_started()
            for chunk in early:
                self.data_received(chunk)

    # -- timers ---------------------------------------------------------------------------------------------
    def _arm_timer(self) -> None:
        self._cancel_timer()
        if self.session is None or self._closing:
            return
        timeout = (self.server.login_timeout if self.session.state == NOT_AUTHENTICATED
                   else self.server.idle_timeout)
        if timeout:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.session is not None and not self.session.closed:
            log.info("IMAP %s: inactivity timeout", self.peer)
            self.session.timeout()


def _bind_literal(host: str, port: int) -> socket.socket | None:
    """A listening socket for an IP-literal host; None for a host name. Raises OSError (e.g. EADDRINUSE)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(100)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class ImapServer:
    """An IMAP4rev1 server over a MailStore; see the README's "The IMAP server" section.

    `transcripts`: a TranscriptRecorder to record every session (None: off).
    `login_timeout` / `idle_timeout`: seconds of silence before BYE (before / after login).
    `max_literal`: largest literal accepted (APPEND size); `max_line`: longest command line.
    """

    def __init__(self, store: MailStore, accounts: Accounts, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None, login_disabled_without_tls: bool = False,
                 transcripts: TranscriptRecorder | None = None, name: str = "recall-lab",
                 login_timeout: float = 60.0, idle_timeout: float = 30 * 60.0,
                 max_literal: int = 50 * 1024 * 1024, max_line: int = 65536,
                 view_cache_size: int = 20000) -> None:
        self.store = store
        self.accounts = accounts
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.transcripts = transcripts
        self.name = name
        self.login_timeout = login_timeout
        self.idle_timeout = idle_timeout
        self.config = SessionConfig(name=name, tls_available=ssl_context is not None,
                                    login_disabled_without_tls=login_disabled_without_tls and ssl_context is not None,
                                    max_line=max_line, max_literal=max_literal)
        self.cache = ViewCache(view_cache_size)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self) -> None:
        """Listen; returns once the socket is bound (raises OSError, e.g. EADDRINUSE)."""
        loop = asyncio.get_running_loop()
        sock = _bind_literal(self.host, self.port)
        if sock is not None:  # an IP literal: bind here, no getaddrinfo (and no executor thread) needed
            self._server = await loop.create_server(lambda: _Connection(self), sock=sock)
        else:
            self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port,
                                                    reuse_address=True)
        sock = self._server.sockets[0].getsockname()
        self.host, self.port = sock[0], sock[1]
        log.info("IMAP server %s listening on %s:%d", self.name, self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and end every session with BYE."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            if conn.session is not None and not conn.session.closed:
                conn.session.server_stopping()
            else:
                conn.close()
        tasks = [c._tls_task for c in self._connections if c._tls_task is not None and not c._tls_task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        # let transports finish closing so no connection outlives stop()
        for _ in range(3):
            if not self._connections:
                break
            await asyncio.sleep(0)
        self._connections.clear()

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def __aenter__(self) -> ImapServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
