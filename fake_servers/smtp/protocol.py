"""aiosmtpd's SMTP protocol with the concerns aiosmtpd has no hook for: enhanced status codes, transcripts, and
the abuse limits of `fake_servers.guard`.

Why a subclass at all, when DESIGN.md puts policy in handler hooks: none of these is mail policy, and aiosmtpd
offers no hook where they could live. aiosmtpd writes many replies itself ("500 Error: bad syntax", "503 Error:
need MAIL command") without an RFC 3463 enhanced status code, and it has no hook that sees the bytes of a session,
a new connection before its greeting, or the outcome of an AUTH before its reply. So this class overrides:

- `push` (every reply passes there: add a code when one is missing, record the line);
- `data_received` (record what the client sent);
- `connection_made` (ask the guard whether the connection may stay: over the cap it gets `421 4.7.0` and is
  closed; else the pre-login time budget starts);
- `auth_PLAIN` / `auth_LOGIN` (aiosmtpd's own extension point for mechanisms: an address the guard penalises
  waits before its password is checked, a wrong password is answered only after the guard's delay, and the last
  failure a connection may have is answered 421 and closed; the command loop reads nothing meanwhile);
- `smtp_MAIL` (an accepted MAIL, like a successful AUTH, ends the pre-login budget).

It also tracks its session task so a listener can close it on shutdown. Every decision about who may send what
lives in `fake_servers.smtp.handlers`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult

from fake_servers.guard import ConnectionGuard, Ticket, peer_host
from fake_servers.transcript import TranscriptRecorder

log = logging.getLogger("fake_servers.smtp")

_HAS_ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}(\s|$)")

#: RFC 3463 codes for aiosmtpd's own replies, by basic reply code.
DEFAULT_ENHANCED: dict[str, str] = {
    "421": "4.3.0",
    "451": "4.3.0",
    "452": "4.3.1",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "538": "5.7.11",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.7.0",
    "555": "5.5.4",
}


def with_enhanced_code(reply: str) -> str:
    """Give a 4xx/5xx reply line an enhanced status code when it has none ("500 x" -> "500 5.5.2 x")."""
    if len(reply) < 3 or reply[0] not in "45" or not reply[:3].isdigit():
        return reply
    if _HAS_ENHANCED.match(reply) and reply[4] == reply[0]:  # "550 5.1.1 ...": already there, same class
        return reply
    code, sep, text = reply[:3], reply[3:4] or " ", reply[4:]
    enhanced = DEFAULT_ENHANCED.get(code, f"{code[0]}.0.0")
    return f"{code}{sep}{enhanced} {text}".rstrip()


class LabSMTP(SMTP):
    """One SMTP session of a lab listener (see the module docstring for why this subclass exists)."""

    def __init__(self, handler: Any, *, transcripts: TranscriptRecorder | None = None,
                 session_kind: str = "smtp", on_open: Any = None, on_close: Any = None,
                 guard: ConnectionGuard | None = None, where: str = "", **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._transcripts = transcripts
        self._session_label = transcripts.new_session(session_kind) if transcripts is not None else ""
        self._inbuf = b""
        self._in_data = False
        self._data_buf = bytearray()
        self._data_size = 0
        self._data_lines = 0
        self._mask_next = False
        self._on_open = on_open
        self._on_close = on_close
        self.session_task: asyncio.Task[None] | None = None
        self._guard = guard
        self._where = where
        self._ticket: Ticket | None = None
        self._refused = False
        self._budget: asyncio.TimerHandle | None = None

    # -- lifecycle: the listener keeps a set of live sessions to close them on stop --------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        if first and self._guard is not None:
            admission = self._guard.admit(peer_host(transport.get_extra_info("peername")), self._where)
            if admission.note:
                log.warning("%s", admission.note)
            if admission.ticket is None:  # over the cap: no session, no greeting, one line and goodbye
                self._refused = True
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(f"421 4.7.0 {self.hostname} {admission.reason}\r\n".encode())
                transport.close()
                return
            self._ticket = admission.ticket
        super().connection_made(transport)
        if first:
            self.session_task = self._handler_coroutine
            if self._on_open is not None:
                self._on_open(self)
            self._arm_budget()

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._end_budget()
        if self._guard is not None:
            self._guard.release(self._ticket)
        try:
            super().connection_lost(error)
        finally:
            if self._on_close is not None:
                self._on_close(self)
                self._on_close = None

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()

    def close(self) -> None:
        """Close the connection (listener shutdown); the session task ends through connection_lost."""
        if self.transport is not None:
            self.transport.close()

    # -- the guard: pre-login budget and failed-AUTH throttling -----------------------------------------
    def _arm_budget(self) -> None:
        if self._guard is None or self._ticket is None:
            return
        left = self._guard.login_time_left(self._ticket)
        if left is not None:
            self._budget = self.loop.call_later(left, self._budget_spent)

    def _end_budget(self) -> None:
        """Logged in (AUTH) or a transaction begun (MAIL): from now on only aiosmtpd's per-command timeout."""
        if self._budget is not None:
            self._budget.cancel()
            self._budget = None

    def _budget_spent(self) -> None:
        self._budget = None
        if self.transport is None or self.transport.is_closing():
            return
        log.info("SMTP %s %s: no AUTH or MAIL within the login time budget; closing", self._where,
                 self.session.peer if self.session is not None else "?")
        self._say_and_close(f"421 4.4.2 {self.hostname} Error: timeout exceeded")

    def _say_and_close(self, reply: str) -> None:
        """A last reply written outside the command loop (a timer), then the connection closed."""
        if self._transcripts is not None:
            self._transcripts.record(self._session_label, "S", reply.encode())
        transport = self.transport
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(reply.encode() + b"\r\n")
        transport.close()

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        await self._penalty()
        return await self._throttled(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        await self._penalty()
        return await self._throttled(await super().auth_LOGIN(_, args))

    async def _penalty(self) -> None:
        """An address with many recent failures waits before its next password is even checked (see guard)."""
        if self._guard is not None and self._ticket is not None:
            wait = self._guard.auth_penalty(self._ticket)
            if wait > 0:
                await asyncio.sleep(wait)

    async def _throttled(self, result: AuthResult) -> AuthResult:
        """A credential check's result, held back as the guard says when it failed.

        `success=False, handled=False` is the authenticator saying no (wrong password, unknown user); every
        other failure (bad base64, "*") tested no password and is answered at once, as aiosmtpd does.
        """
        if result.success:
            self._end_budget()
            return result
        if result.handled or self._guard is None or self._ticket is None:
            return result
        verdict = self._guard.auth_failed(self._ticket)
        if verdict.delay > 0:
            # the command loop is inside smtp_AUTH: nothing more is read from this client until we answer
            await asyncio.sleep(verdict.delay)
        if verdict.disconnect:
            log.info("SMTP %s %s: %d failed AUTH attempts; closing", self._where,
                     self.session.peer if self.session is not None else "?", self._ticket.failures)
            await self.push("421 4.7.0 Too many failed authentication attempts; closing connection")
            if self.transport is not None:
                self.transport.close()
            return AuthResult(success=False, handled=True)
        return result

    async def smtp_MAIL(self, arg: str) -> None:
        await super().smtp_MAIL(arg)
        if self.envelope is not None and self.envelope.mail_from is not None:
            self._end_budget()

    # -- replies --------------------------------------------------------------------------------------
    def push(self, status: AnyStr) -> Coroutine[Any, Any, None]:
        # A plain function returning aiosmtpd's push coroutine (callers `await self.push(...)`): no coroutine
        # frame of our own for each of the four or more replies per message.
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if text[:1] in "45":
            text = with_enhanced_code(text)
        if self._transcripts is not None:
            if text.startswith("354"):
                self._in_data = True
            self._mask_next = text.startswith("334")
            self._transcripts.record(self._session_label, "S", text.encode("utf-8", "replace"))
        return super().push(text)

    # -- what the client sent --------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._transcripts is not None:
            self._record_client(data)
        super().data_received(data)

    def _record_client(self, data: bytes) -> None:
        assert self._transcripts is not None
        self._inbuf += data
        while True:
            end = self._inbuf.find(b"\r\n")
            if end < 0:
                if len(self._inbuf) > 65536:  # a runaway line: record what there is, keep memory bounded
                    self._inbuf = self._inbuf[-2:]
                return
            line, self._inbuf = self._inbuf[:end], self._inbuf[end + 2:]
            if self._in_data:
                if line == b".":
                    self._in_data = False
                    self._record_data_block()
                    self._transcripts.record(self._session_label, "C", b".")
                else:
                    self._data_size += len(line) + 2
                    self._data_lines += 1
                    if len(self._data_buf) <= self._transcripts.max_literal:
                        self._data_buf += line + b"\r\n"
                continue
            if self._mask_next:
                self._mask_next = False
                line = b"********"
            self._transcripts.record(self._session_label, "C", line)

    def _record_data_block(self) -> None:
        """A DATA body as one transcript entry: its lines when short, `<N octets>` when long (as render does)."""
        assert self._transcripts is not None
        if self._data_size > self._transcripts.max_literal and self._data_lines > 3:
            block = f"<{self._data_size} octets>".encode()
        else:
            block = bytes(self._data_buf)
        if block:
            self._transcripts.record(self._session_label, "C", block)
        self._data_buf = bytearray()
        self._data_size = 0
        self._data_lines = 0
