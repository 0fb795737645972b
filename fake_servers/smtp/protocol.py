"""aiosmtpd's SMTP protocol with the concerns aiosmtpd has no hook for: enhanced status codes, transcripts, and
the abuse limits of `recall_lab.fake_servers.guard`.

Why a subclass at all, when DESIGN.md puts policy in handler hooks: none of these is mail policy, and aiosmtpd
offers no hook where they could live. aiosmtpd writes many replies itself ("500 Error: bad syntax", "503 Error:
need MAIL command") without an RFC 3463 enhanced status code, and it has no hook that sees the bytes of a session,
a new connection before its greeting, or the outcome of an AUTH before its reply. So this class overrides:

- `push` (every reply passes there: add a code when one is missing, record the line, and once per time slice
  give the event loop back: aiosmtpd answers pipelined commands from its buffer without ever waiting, so one
  burst of 40,000 NOOPs held every other client for most of a second);
- `challenge_auth` (an AUTH response line over the line limit is read to its end and refused with 500 5.5.6;
  aiosmtpd's `readline` raised, logged a traceback and read the rest of the line as commands);
- `data_received` (record what the client sent);
- `connection_made` (ask the guard whether the connection may stay: over the cap it gets `421 4.7.0` and is
  closed; else the pre-login time budget starts);
- `auth_PLAIN` / `auth_LOGIN` (aiosmtpd's own extension point for mechanisms: an address the guard penalises
  waits before its password is checked, a wrong password is answered only after the guard's delay, and the last
  failure a connection may have is answered 421 and closed; the command loop reads nothing meanwhile);
- `smtp_MAIL` (an accepted MAIL of an authenticated session, like a successful AUTH, ends the pre-login
  budget; an unauthenticated session (MX) gets a fresh budget after each accepted message, so it can deliver
  mail but cannot sit on its connection slot);
- `smtp_STARTTLS` (refused inside TLS; a failed handshake is one log line, not a traceback per client);
- `smtp_DATA` (aiosmtpd keeps one object per line of the body, ~100 bytes for each empty line, and reads line by
  line: the body is read in bulk into one buffer capped by the size limit instead, `data_reader.DataReader`,
  with aiosmtpd's replies and handler hooks unchanged).

It also tracks its session task so a listener can close it on shutdown. Every decision about who may send what
lives in `recall_lab.fake_servers.smtp.handlers`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Coroutine
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, TLSSetupException, _Missing

from recall_lab.fake_servers.guard import ConnectionGuard, Ticket, peer_host, sock_address
from recall_lab.fake_servers.smtp.data_reader import DataReader, DataState
from recall_lab.fake_servers.transcript import TranscriptRecorder

log = logging.getLogger("recall_lab.fake_servers.smtp")


class _ClientDoingsAreNotWarnings(logging.Filter):
    """aiosmtpd logs what a client did wrong ("%r unrecognised: %s", "%r too many bogus commands", ...) as
    WARNING, which Python's last-resort handler prints: 8 lines for every connection that sends junk, so any
    peer could fill the server's log (or stall it, when its stderr is a pipe nobody reads). They say nothing
    about the server's health: they go out as INFO, like the lab's own per-client lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith("%r "):
            record.levelno = logging.INFO
            record.levelname = "INFO"
        return True


logging.getLogger("mail.log").addFilter(_ClientDoingsAreNotWarnings())

#: `StreamReader.read(n)` returns at most what it holds; with this n, all of it.
_READ_ALL = 1 << 30

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
                 guard: ConnectionGuard | None = None, where: str = "", time_slice: float = 0.005,
                 **kwargs: Any) -> None:
        """`time_slice`: how long the session may run pipelined commands before letting other clients in."""
        super().__init__(handler, **kwargs)
        self._time_slice = time_slice
        self._slice_start = 0.0
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
            peername = transport.get_extra_info("peername")
            admission = self._guard.admit(peer_host(peername), self._where, peer=sock_address(peername),
                                          local=sock_address(transport.get_extra_info("sockname")))
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
        if (self.envelope is not None and self.envelope.mail_from is not None and self.session is not None
                and self.session.authenticated):
            self._end_budget()

    # -- STARTTLS ---------------------------------------------------------------------------------------
    async def smtp_STARTTLS(self, arg: str) -> None:
        """aiosmtpd's STARTTLS, but refused inside TLS (aiosmtpd said 220 and layered a second handshake on the
        first), and a failed handshake logged in one line: aiosmtpd's exception path gave the handler's
        traceback for every client that sent garbage after STARTTLS."""
        if self._tls_protocol is not None:
            await self.push("503 5.5.1 TLS is already active")
            return
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as exc:
            log.info("SMTP %s %s: TLS handshake failed: %s", self._where,
                     self.session.peer if self.session is not None else "?", exc.__cause__ or exc)
            # what aiosmtpd's command loop does after a failed handshake, less the traceback
            if self.transport is not None:
                self.transport.close()
            self.connection_lost(exc)

    # -- DATA: the body in one buffer, never more than the size limit -----------------------------------
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA (same checks, replies, SMTPUTF8 decoding and `handle_DATA` hook; not its deprecated
        `process_message` fallback, which no lab handler has) with the body read by `DataReader`."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = DataReader(self.data_size_limit, self.line_length_limit)
        leftover: bytes | None = None
        try:
            while leftover is None:
                # Everything the stream holds (one network read at most: it stops reading the socket above
                # twice its small line limit), so the buffer is empty when the leftover is handed back.
                chunk = await self._reader.read(_READ_ALL)
                if not chunk:  # end of stream: the session is over (eof_received cancels the command loop)
                    self._writer.close()
                    return
                leftover = reader.feed(chunk)
        except asyncio.CancelledError:
            log.info("Connection lost during DATA")
            self._writer.close()
            raise
        if leftover and not self._reader.at_eof():
            self._reader.feed_data(leftover)  # pipelined commands after the dot, for the command loop
        if reader.state is DataState.TOO_LONG:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
        elif reader.state is DataState.TOO_MUCH:
            await self.push("552 Error: Too much mail data")
        if reader.state is not DataState.NOMINAL:
            self._set_post_data_state()
            return
        original_content = reader.content
        del reader
        content: str | bytes = original_content
        if self._decode_data:
            if self.enable_SMTPUTF8:
                content = original_content.decode("utf-8", errors="surrogateescape")
            else:
                try:
                    content = original_content.decode("ascii", errors="strict")
                except UnicodeDecodeError:
                    await self.push("500 Error: strict ASCII mode")
                    return
        self.envelope.content = content
        self.envelope.original_content = original_content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        reply = "250 OK" if status is MISSING else status
        await self.push(reply)
        if reply.startswith("250") and self._budget is not None and self._guard is not None and self._ticket:
            # an unauthenticated session (MX) delivered a message: the next one gets a fresh budget
            self._end_budget()
            self._guard.restart_budget(self._ticket)
            self._arm_budget()

    # -- AUTH exchange lines ----------------------------------------------------------------------------
    async def challenge_auth(self, challenge: str | bytes, encode_to_b64: bool = True,
                             log_client_response: bool = False) -> bytes | _Missing:
        """aiosmtpd's challenge (334, then one response line), with a response over the line limit read to its
        end and refused (RFC 4954: 500 5.5.6), where aiosmtpd's `readline` raised and left the rest of the line
        to be read as commands."""
        raw = challenge.encode() if isinstance(challenge, str) else challenge
        await self.push(b"334 " + (base64.b64encode(raw) if encode_to_b64 else raw))
        line = await self._auth_line()
        if line is None:
            await self.push("500 5.5.6 Authentication exchange line is too long")
            return MISSING
        blob = line.strip()
        if blob == b"*":  # RFC 4954: the client cancels; what a client does is not the server's warning
            log.info("%r aborted AUTH with '*'", self.session.peer if self.session is not None else "?")
            await self.push("501 5.7.0 Auth aborted")
            return MISSING
        try:
            return base64.b64decode(blob, validate=True)
        except binascii.Error:
            await self.push("501 5.5.2 Can't decode base64")
            return MISSING

    async def _auth_line(self) -> bytes | None:
        """One line of the client's; None when it was over the stream's line limit (read and dropped)."""
        too_long = False
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as error:
                await self._reader.read(error.consumed)
                too_long = True
                continue
            except asyncio.IncompleteReadError:  # the client left mid-line
                return None
            return None if too_long else line

    # -- replies --------------------------------------------------------------------------------------
    def push(self, status: AnyStr) -> Coroutine[Any, Any, None]:
        # A plain function returning aiosmtpd's push coroutine (callers `await self.push(...)`): no coroutine
        # frame of our own for each of the four or more replies per message, except once per time slice.
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if text[:1] in "45":
            text = with_enhanced_code(text)
        if self._transcripts is not None:
            if text.startswith("354"):
                self._in_data = True
            self._mask_next = text.startswith("334")
            self._transcripts.record(self._session_label, "S", text.encode("utf-8", "replace"))
        reply = super().push(text)
        now = self.loop.time()
        if now - self._slice_start < self._time_slice:
            return reply
        self._slice_start = now
        return self._push_and_yield(reply)

    async def _push_and_yield(self, reply: Coroutine[Any, Any, None]) -> None:
        """aiosmtpd answers pipelined commands from its buffer without ever waiting, so a client that sent
        thousands in one burst would hold the event loop for all of them: once per time slice, give it back."""
        await reply
        await asyncio.sleep(0)

    # -- what the client sent --------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._transcripts is not None:
            self._record_client(data)
        super().data_received(data)

    def _record_client(self, data: bytes) -> None:
        assert self._transcripts is not None
        buf = self._inbuf + data
        start = 0  # lines are cut by position: slicing off each line would copy the rest of the read every time
        while True:
            end = buf.find(b"\r\n", start)
            if end < 0:
                self._inbuf = buf[start:]
                if len(self._inbuf) > 65536:  # a runaway line: record what there is, keep memory bounded
                    self._inbuf = self._inbuf[-2:]
                return
            line, start = buf[start:end], end + 2
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
