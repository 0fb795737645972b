"""An SMTP listener on the running event loop (no aiosmtpd Controller thread), with a clean shutdown.

Why not aiosmtpd's Controller: it runs each server in a thread of its own with its own loop; the lab runs every
server of every domain in one loop, so that the store (synchronous, loop-thread only) is shared safely and a
start or stop is a few milliseconds. `stop` closes the listening socket, then every live session, and awaits
their tasks, so nothing is left behind (the lab's 100 start/stop cycles test counts tasks and fds).

With `implicit_tls` the listener speaks TLS from the first byte (RFC 8314's submissions, port 465's role): no
STARTTLS offered, AUTH at once; a client that does not complete the handshake within `tls_handshake_timeout`
seconds (a plain-text client waiting for a greeting) is disconnected.

Faults at the connect stage (`recall_lab.fake_servers.faults`: an outage, a refusal or a drop) are decided as
each connection is accepted, before any session: such a connection gets the injected reply and is closed, is
closed at once, or is never answered (an outage in mode silent), and never reaches the handler.

Every session is admitted by the `ConnectionGuard` passed in (shared with the domain's other listeners, so its
caps count them all); without one, the listener gets a guard of its own with the default limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from recall_lab.fake_servers.faults import SmtpDecision
from recall_lab.fake_servers.guard import ConnectionGuard
from recall_lab.fake_servers.smtp.handlers import MxHandler, SubmissionHandler
from recall_lab.fake_servers.smtp.protocol import LabSMTP
from recall_lab.fake_servers.transcript import TranscriptRecorder


class _DropDeprecatedLoginData(logging.Filter):
    """aiosmtpd 1.4 logs a deprecation warning of its own on every successful AUTH; it says nothing useful."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in str(record.msg)


logging.getLogger("mail.log").addFilter(_DropDeprecatedLoginData())

#: Seconds a client of an implicit-TLS listener has to complete its handshake.
TLS_HANDSHAKE_TIMEOUT = 10.0


class _FaultedConnection(asyncio.Protocol):
    """A connection a connect-stage fault answers instead of a session: the injected reply and close, a drop,
    or silence (closed after `silence` seconds, or when the listener stops)."""

    def __init__(self, decision: SmtpDecision, listener: SmtpListener, silence: float) -> None:
        self.decision = decision
        self.listener = listener
        self.silence = silence
        self.transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        if self.decision.drop:
            transport.abort()
        elif self.decision.silent:
            self.listener._silent.add(self)
            self._timer = asyncio.get_running_loop().call_later(self.silence, transport.abort)
        else:
            transport.write(f"{self.decision.reply}\r\n".encode())
            transport.close()

    def data_received(self, data: bytes) -> None:
        pass  # a refused or silent connection reads nothing

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.listener._silent.discard(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class SmtpListener:
    def __init__(self, handler: MxHandler | SubmissionHandler, *, host: str, port: int, hostname: str,
                 data_size_limit: int, tls_context: ssl.SSLContext | None = None,
                 transcripts: TranscriptRecorder | None = None, timeout: float | None = None,
                 guard: ConnectionGuard | None = None, implicit_tls: bool = False,
                 tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT) -> None:
        """`timeout`: aiosmtpd's wait for each command (None: the guard's `smtp_command_timeout`).
        `implicit_tls`: TLS from the first byte with `tls_context` (required then), instead of STARTTLS."""
        if implicit_tls and tls_context is None:
            raise ValueError("an implicit-TLS listener needs a TLS context")
        self.implicit_tls = implicit_tls
        self.tls_handshake_timeout = tls_handshake_timeout
        self.handler = handler
        self.host = host
        self.requested_port = port
        self.port = port
        self.hostname = hostname
        self.data_size_limit = data_size_limit
        self.tls_context = tls_context
        self.transcripts = transcripts
        self.guard = guard if guard is not None else ConnectionGuard()
        self.timeout = timeout if timeout is not None else self.guard.limits.smtp_command_timeout
        self._server: asyncio.Server | None = None
        self._sessions: set[LabSMTP] = set()
        self._silent: set[_FaultedConnection] = set()

    @property
    def kind(self) -> str:
        return self.handler.kind

    def _make_session(self) -> LabSMTP | _FaultedConnection:
        decision = self.handler.acceptor.faults.smtp(self.handler.kind, "connect")
        if decision.acts:
            return _FaultedConnection(decision, self, self.guard.limits.login_timeout or 60.0)
        submission = isinstance(self.handler, SubmissionHandler)
        # both offer STARTTLS when the lab has TLS (an MX for other MTAs' opportunistic TLS); an implicit-TLS
        # listener is encrypted already, so it offers no STARTTLS and takes AUTH at once
        tls = None if self.implicit_tls else self.tls_context
        return LabSMTP(
            self.handler,
            transcripts=self.transcripts,
            session_kind=f"smtp-{self.handler.kind}",
            on_open=self._sessions.add,
            on_close=self._sessions.discard,
            guard=self.guard,
            where=f"{self.hostname} {self.handler.kind}",
            hostname=self.hostname,
            ident="recall-lab ESMTP",
            data_size_limit=self.data_size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=tls,
            require_starttls=False,
            auth_required=False,  # enforced in handle_MAIL, with the reply the lab documents
            auth_require_tls=tls is not None and not self.implicit_tls,
            authenticator=self.handler.authenticator if submission else None,  # type: ignore[union-attr]
            timeout=self.timeout,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.implicit_tls:
            self._server = await loop.create_server(self._make_session, self.host, self.requested_port,
                                                    ssl=self.tls_context,
                                                    ssl_handshake_timeout=self.tls_handshake_timeout)
        else:
            self._server = await loop.create_server(self._make_session, self.host, self.requested_port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        sessions = list(self._sessions)
        tasks = [s.session_task for s in sessions if s.session_task is not None]
        for session in sessions:
            session.close()
        for silent in list(self._silent):
            silent.close()
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await server.wait_closed()

    @property
    def sessions(self) -> int:
        return len(self._sessions)
