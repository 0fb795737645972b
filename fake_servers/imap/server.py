"""The asyncio adapter: a listening socket whose connections each drive one sans-I/O ImapSession.

Why asyncio.Protocol and not streams: the session is synchronous, so bytes go straight from data_received into
the session and its answers out through transport.write, with no task per connection and nothing to leak
when a client vanishes. Timers give the time limits: a total budget from connect to login (60 s by default, not
extended by whatever the client sends), then 30 min of inactivity. The `ConnectionGuard` passed in (shared with
the domain's SMTP listeners) admits each connection: over its caps the client gets `* BYE [UNAVAILABLE]` and no
session.

With `implicit_tls` the server speaks TLS from the first byte (IMAPS, RFC 8314): sessions start with TLS active
(no STARTTLS announced), and a client that does not complete the handshake within `tls_handshake_timeout`
seconds is disconnected. With `faults` (the domain's `recall_lab.fake_servers.faults.FaultSet`) each connection
asks before each command line whether it is cut there (an IMAP disconnect: the socket closed, no BYE).

Flow control, so that a client that does not read costs bounded memory and no client holds the loop: when more
than 4 MB wait to be sent, asyncio calls pause_writing and the session stops running commands (the one under
way stops after its current piece); resume_writing lets it go on. A session that has work left (over its time
slice, or resumed) is run again with call_soon, after the other connections had their turn, and nothing more is
read from its client while it has commands queued. Accepted sockets get TCP_NODELAY: an IDLE push must leave
at once, not wait for the client's delayed ACK.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import zlib
from collections.abc import Callable

from ..accounts import Accounts
from ..faults import FaultSet
from ..guard import ConnectionGuard, GuardLimits, Ticket, peer_host, sock_address
from ..store.base import MailStore
from ..transcript import TranscriptRecorder
from .compress import Deflate
from .mime.cache import ViewCache
from .mime.tree import DEFAULT_LIMITS, MimeLimits
from .session import ImapSession, SessionConfig
from .state import PRE_AUTH, SessionState
from .user_sessions import DEFAULT_MAX_USER_SESSIONS, UserSessions

log = logging.getLogger("recall_lab.fake_servers.imap")

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
        self.ticket: Ticket | None = None
        self._write_paused = False  # asyncio said the transport holds more than _HIGH_WATER
        self._reading = True  # whether we left the transport reading (see _settle)
        self._proceed_handle: asyncio.Handle | None = None
        self._hold: asyncio.TimerHandle | None = None  # a failed login's answer waits for this (see hold)
        self._wake_handle: asyncio.Handle | None = None  # an idle push waits for this (see wake)
        self._commands = 0  # command lines the session has taken (what an IMAP disconnect fault counts)
        self.deflate: Deflate | None = None  # COMPRESS=DEFLATE active (compress.py)

    # -- asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        _no_delay(transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        srv = self.server
        admission = srv.guard.admit(peer_host(peer), f"{srv.name} IMAP", peer=sock_address(peer),
                                    local=sock_address(transport.get_extra_info("sockname")))
        if admission.note:
            log.warning("%s", admission.note)
        if admission.ticket is None:  # over the cap: one line, no session, and the socket closed at once
            self._closing = True
            transport.write(f"* BYE [UNAVAILABLE] {admission.reason}\r\n".encode())
            transport.close()
            return
        self.ticket = admission.ticket
        self.session = ImapSession(srv.store, srv.accounts, self, srv.config, srv.cache,
                                   tls_active=srv.implicit_tls,
                                   transcript=srv.transcripts, peer=self.peer,
                                   throttle=srv.guard.throttle(admission.ticket),
                                   user_sessions=srv.user_sessions)
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
        if self.deflate is not None:
            self.deflate.received(data)
            self._inflate()
        else:
            session.feed(data)
        self._arm_timer()
        self._settle()

    def _inflate(self) -> None:
        """Feed the session inflated input one bounded step at a time, and only while it takes it (a
        decompression bomb stays compressed until the session has room: compress.py says why)."""
        deflate, session = self.deflate, self.session
        while deflate is not None and session is not None and deflate.has_pending and not session.backlogged \
                and not session.closed and not self._closing:
            try:
                plain = deflate.inflate_step()
            except zlib.error as exc:
                log.info("IMAP %s: corrupt DEFLATE stream: %s", self.peer, exc)
                self._closing = True
                session.shutdown()
                if self.transport is not None:
                    self.transport.abort()
                return
            if plain:
                session.feed(plain)

    def connection_lost(self, exc: Exception | None) -> None:
        session = self.session
        if session is not None and not session.closed:
            if session.framer.in_literal:
                log.info("IMAP %s: client went away in the middle of a literal", self.peer)
            elif session.state is SessionState.IDLE:
                log.info("IMAP %s: client went away while idling", self.peer)
            else:
                log.info("IMAP %s: client closed the connection", self.peer)
            session.shutdown()  # drops a half-done command and what it had built, at once
        self._cancel_timer()
        self._cancel_proceed()
        self._cancel_hold()
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        self.server.guard.release(self.ticket)
        self._closing = True
        if self._tls_task is not None and not self._tls_task.done():
            self._tls_task.cancel()
        self.server._connections.discard(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.session is not None:
            self.session.pause_output()
        self._settle()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.session is not None and not self._closing:
            self.session.resume_output()
        self._settle()

    # -- running the session ------------------------------------------------------------------------------
    def _settle(self) -> None:
        """After the session ran: let it go on soon if it has work left, and read from the client only while
        nothing is queued and the output is under the mark (what is not read costs us nothing)."""
        session = self.session
        transport = self.transport
        if session is None or transport is None or self._closing or session.closed:
            return
        if self.deflate is not None and self.deflate.has_pending and not session.backlogged:
            self._inflate()
        if (session.runnable or (self.deflate is not None and self.deflate.has_pending and not session.backlogged
                                 and not session.closed)) and self._proceed_handle is None:
            self._proceed_handle = asyncio.get_running_loop().call_soon(self._proceed)
        if session.io_paused:  # STARTTLS under way: start_tls has reading stopped until the handshake is done
            return
        want = not self._write_paused and not session.backlogged and not (
            self.deflate is not None and self.deflate.has_pending)
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _proceed(self) -> None:
        self._proceed_handle = None
        if self.session is not None and not self._closing:
            self.session.proceed()
            self._inflate()
            self._settle()

    def _cancel_proceed(self) -> None:
        if self._proceed_handle is not None:
            self._proceed_handle.cancel()
            self._proceed_handle = None

    # -- SessionIO ----------------------------------------------------------------------------------------
    def before_command(self) -> bool:
        """SessionIO's optional hook, before each command line: False when the domain's faults cut the
        connection here (closed at once, without BYE, as a network failure would)."""
        self._commands += 1
        faults = self.server.faults
        if faults is None or not faults.imap_command(self._commands):
            return True
        log.info("IMAP %s: connection cut by an injected fault at command %d", self.peer, self._commands)
        self._closing = True
        if self.session is not None:
            self.session.shutdown()
        if self.transport is not None:
            self.transport.abort()
        return False

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data if self.deflate is None else self.deflate.compress(data))

    def start_compression(self) -> None:
        """SessionIO: COMPRESS DEFLATE answered (its OK already written plain); deflate both ways from now on."""
        self.deflate = Deflate()

    def close(self) -> None:
        self._closing = True
        self._cancel_timer()
        self._cancel_hold()
        self._cancel_proceed()
        if self.transport is not None:
            if self._write_paused:  # the client does not read: waiting to flush would keep its buffer forever
                self.transport.abort()
            else:
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
        new.set_write_buffer_limits(high=_HIGH_WATER)
        self._reading = True
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
        srv = self.server
        if self.session.state in PRE_AUTH:
            # a total budget counted from connect: a byte a minute must not keep an anonymous socket forever
            if not srv.login_timeout or self.ticket is None:
                return
            timeout = max(0.0, self.ticket.opened + srv.login_timeout - srv.guard.clock())
        elif srv.idle_timeout:
            timeout = srv.idle_timeout
        else:
            return
        self._timer = asyncio.get_running_loop().call_later(timeout, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.session is not None and not self.session.closed:
            if self.session.state in PRE_AUTH:
                log.info("IMAP %s: no login within %g s", self.peer, self.server.login_timeout)
                self.session.timeout(f"Autologout; no login within {self.server.login_timeout:g} s")
            else:
                log.info("IMAP %s: inactivity timeout", self.peer)
                self.session.timeout()

    def wake(self) -> None:
        """SessionIO: call the session's `wake` soon (the changes another session made in its step, in one
        write), once however many changes asked for it meanwhile."""
        if self._wake_handle is None and not self._closing:
            self._wake_handle = asyncio.get_running_loop().call_soon(self._woken)

    def _woken(self) -> None:
        self._wake_handle = None
        if self.session is not None and not self._closing:
            self.session.wake()
            self._settle()

    # -- failed logins: the session holds its answer, we keep time --------------------------------------------
    def hold(self, seconds: float) -> None:
        """SessionIO: call the session's release_hold after `seconds`. Meanwhile the session is backlogged, so
        _settle keeps reading paused: one guess per delay, however many the client pipelines."""
        self._cancel_hold()
        self._hold = asyncio.get_running_loop().call_later(seconds, self._release_hold)

    def offload(self, work: Callable[[], object]) -> None:
        """SessionIO (optional): run CPU-bound `work` (SCRAM's PBKDF2, which releases the GIL) in a thread, then
        call the session's release_hold; the session is held meanwhile, so nothing is read."""
        def done(future: asyncio.Future) -> None:
            if not future.cancelled():
                future.exception()  # retrieved: the session derives inline when the keys are still missing
            self._release_hold()

        asyncio.get_running_loop().run_in_executor(None, work).add_done_callback(done)

    def _release_hold(self) -> None:
        self._hold = None
        if self.session is not None and not self._closing:
            self.session.release_hold()
            self._arm_timer()
            self._settle()

    def _cancel_hold(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None


def _no_delay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on an accepted socket, whatever socket the listener was given (asyncio sets it only when the
    listening socket's proto says TCP)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the peer is already gone
            pass


def _bind_literal(host: str, port: int) -> socket.socket | None:
    """A listening socket for an IP-literal host; None for a host name. Raises OSError (e.g. EADDRINUSE)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None
    # IPPROTO_TCP said outright: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and an accepted
    # socket inherits the listener's (proto 0 left Nagle on: an IDLE push waited ~40 ms for a delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
    """An IMAP4rev1 server over a MailStore; see docs/imap.md.

    `transcripts`: a TranscriptRecorder to record every session (None: off).
    `guard`: connection caps and failed-login throttling, usually shared with the domain's SMTP listeners
    (None: a guard of the server's own with the default limits, or `login_timeout` when given).
    `login_timeout`: seconds from connect to login before BYE (None: the guard's); `idle_timeout`: seconds of
    silence after login before BYE.
    `max_literal`: largest literal accepted (APPEND size); `max_line`: longest command line.
    `time_slice`: seconds one session may run before the others get the loop (None: no limit).
    `mime_limits`: how much MIME structure a message may have before the rest is one opaque part (Dovecot's
    limits by default); an APPEND over them is refused.
    `max_user_sessions`: logged-in sessions one user may have at once (user_sessions.py says why; None: any).
    """

    def __init__(self, store: MailStore, accounts: Accounts, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None, login_disabled_without_tls: bool = False,
                 transcripts: TranscriptRecorder | None = None, name: str = "recall-lab",
                 login_timeout: float | None = None, idle_timeout: float = 30 * 60.0,
                 max_literal: int = 50 * 1024 * 1024, max_line: int = 65536,
                 view_cache_size: int = 20000, guard: ConnectionGuard | None = None,
                 time_slice: float | None = 0.02, mime_limits: MimeLimits = DEFAULT_LIMITS,
                 max_user_sessions: int | None = DEFAULT_MAX_USER_SESSIONS, implicit_tls: bool = False,
                 tls_handshake_timeout: float = 10.0, faults: FaultSet | None = None) -> None:
        if implicit_tls and ssl_context is None:
            raise ValueError("an implicit-TLS IMAP server needs a TLS context")
        self.implicit_tls = implicit_tls
        self.tls_handshake_timeout = tls_handshake_timeout
        self.faults = faults
        if guard is None:
            guard = ConnectionGuard(GuardLimits(login_timeout=login_timeout) if login_timeout is not None else None)
        self.guard = guard
        self.store = store
        self.accounts = accounts
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.transcripts = transcripts
        self.name = name
        self.login_timeout = login_timeout if login_timeout is not None else guard.limits.login_timeout
        self.idle_timeout = idle_timeout
        self.config = SessionConfig(name=name, tls_available=ssl_context is not None and not implicit_tls,
                                    login_disabled_without_tls=login_disabled_without_tls and ssl_context is not None,
                                    max_line=max_line, max_literal=max_literal, time_slice=time_slice)
        self.cache = ViewCache(view_cache_size, limits=mime_limits)
        self.user_sessions = UserSessions(max_user_sessions)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self) -> None:
        """Listen; returns once the socket is bound (raises OSError, e.g. EADDRINUSE)."""
        loop = asyncio.get_running_loop()
        tls: dict = {}
        if self.implicit_tls:
            tls = {"ssl": self.ssl_context, "ssl_handshake_timeout": self.tls_handshake_timeout}
        sock = _bind_literal(self.host, self.port)
        if sock is not None:  # an IP literal: bind here, no getaddrinfo (and no executor thread) needed
            self._server = await loop.create_server(lambda: _Connection(self), sock=sock, **tls)
        else:
            self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port,
                                                    reuse_address=True, **tls)
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
