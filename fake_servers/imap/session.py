"""One IMAP connection's protocol state machine (sans-I/O).

Why sans-I/O: bytes in (`feed`), bytes out (through `SessionIO.write`), store events in (`on_store_event`).
Everything a command does is synchronous (the store API is), so a command's whole response is built in one
buffer and written once; the asyncio adapter in server.py only moves bytes, and tests drive a session without
any socket. Commands of the selected state live in message_commands.py, mailbox commands in
mailbox_commands.py; this module holds the states, the framing, the dispatch and the any-state commands.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..accounts import Accounts
from ..store.base import MailboxDeleted, MailboxRenamed, MailStore, StoreError
from ..store.base import NoSuchMailbox as _NoSuchMailbox
from ..transcript import TranscriptRecorder
from .capabilities import ENABLEABLE, capabilities
from .errors import CommandFailed, ImapError, ParseError
from .framing import Command, Continue, Framer, Refused, tag_of
from .lexer import Lexer
from .mailbox_commands import MailboxCommands
from .message_commands import MessageCommands
from .selected import MODSEQ_SHIFT, SelectedMailbox
from .view_cache import ViewCache

log = logging.getLogger("fake_servers.imap")
_LITERAL_AT_EOL = re.compile(rb"\{(\d+)\+?\}\r\n")

PRE_AUTH_MAX_LITERAL = 64 * 1024

NOT_AUTHENTICATED = "not authenticated"
AUTHENTICATED = "authenticated"
SELECTED = "selected"
LOGOUT = "logout"


class SessionIO(Protocol):
    """What the session needs from its transport."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def start_tls(self) -> None: ...


@dataclass
class SessionConfig:
    name: str = "recall-lab"
    tls_available: bool = False
    login_disabled_without_tls: bool = False
    max_line: int = 65536
    max_literal: int = 50 * 1024 * 1024


# command name -> (handler method name, states it is valid in)
_ANY = (NOT_AUTHENTICATED, AUTHENTICATED, SELECTED)
_AUTH = (AUTHENTICATED, SELECTED)
_SEL = (SELECTED,)
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "CAPABILITY": ("cmd_capability", _ANY),
    "NOOP": ("cmd_noop", _ANY),
    "LOGOUT": ("cmd_logout", _ANY),
    "STARTTLS": ("cmd_starttls", (NOT_AUTHENTICATED,)),
    "LOGIN": ("cmd_login", (NOT_AUTHENTICATED,)),
    "AUTHENTICATE": ("cmd_authenticate", (NOT_AUTHENTICATED,)),
    "ID": ("cmd_id", _ANY),
    "ENABLE": ("cmd_enable", _AUTH),
    "NAMESPACE": ("cmd_namespace", _AUTH),
    "SELECT": ("cmd_select", _AUTH),
    "EXAMINE": ("cmd_examine", _AUTH),
    "CREATE": ("cmd_create", _AUTH),
    "DELETE": ("cmd_delete", _AUTH),
    "RENAME": ("cmd_rename", _AUTH),
    "SUBSCRIBE": ("cmd_subscribe", _AUTH),
    "UNSUBSCRIBE": ("cmd_unsubscribe", _AUTH),
    "LIST": ("cmd_list", _AUTH),
    "LSUB": ("cmd_lsub", _AUTH),
    "STATUS": ("cmd_status", _AUTH),
    "APPEND": ("cmd_append", _AUTH),
    "IDLE": ("cmd_idle", _AUTH),
    "CHECK": ("cmd_noop", _SEL),
    "CLOSE": ("cmd_close", _SEL),
    "UNSELECT": ("cmd_unselect", _SEL),
    "EXPUNGE": ("cmd_expunge", _SEL),
    "SEARCH": ("cmd_search", _SEL),
    "SORT": ("cmd_sort", _SEL),
    "FETCH": ("cmd_fetch", _SEL),
    "STORE": ("cmd_store", _SEL),
    "COPY": ("cmd_copy", _SEL),
    "MOVE": ("cmd_move", _SEL),
    "UID": ("cmd_uid", _SEL),
}

#: Commands during which no EXPUNGE/VANISHED may be sent (RFC 3501 7.4.1).
NO_EXPUNGE_DURING = frozenset({"FETCH", "STORE", "SEARCH", "SORT"})


class ImapSession(MailboxCommands, MessageCommands):
    def __init__(self, store: MailStore, accounts: Accounts, io: SessionIO, config: SessionConfig | None = None,
                 cache: ViewCache | None = None, tls_active: bool = False,
                 transcript: TranscriptRecorder | None = None, peer: str = "?") -> None:
        self.store = store
        self.accounts = accounts
        self.io = io
        self.config = config or SessionConfig()
        self.cache = cache or ViewCache()
        self.tls_active = tls_active
        self.transcript = transcript
        self.label = transcript.new_session("imap") if transcript is not None else "imap"
        self.peer = peer
        # before login only small literals (a user name, a password): nobody unauthenticated may make us
        # accept 50 MiB
        self.framer = Framer(self.config.max_line, min(self.config.max_literal, PRE_AUTH_MAX_LITERAL))
        self.state = NOT_AUTHENTICATED
        self.user: str | None = None
        self.selected: SelectedMailbox | None = None
        self.condstore = False
        self.qresync = False
        self.idle_tag: str | None = None
        self.auth_tag: str | None = None
        self._out = bytearray()
        self._expunges_reported = False
        self._tls_pending = False
        self._subscribed = False
        self._listener: Callable = self.on_store_event
        self.closed = False

    # -- I/O edges ------------------------------------------------------------------------------------------
    def greeting(self) -> None:
        caps = " ".join(self._capabilities())
        self._write(f"* OK [CAPABILITY {caps}] {self.config.name} IMAP4rev1 recall-lab ready.\r\n".encode())
        self._flush()

    def feed(self, data: bytes) -> None:
        """Bytes from the client: frame them and run every complete command.

        Each command runs before the framer reads the next one, so a pipelined LOGIN has raised the literal
        limit before the APPEND behind it is judged (and a refused literal is still never buffered).
        """
        if self.closed:
            return
        for event in self.framer.events(data):
            if self.closed or self.state == LOGOUT:
                break
            if isinstance(event, Command):
                self._record("C", b"********" if self.auth_tag is not None else event.data)
                self._command(event.data)
                if self.io_paused:
                    break
            elif isinstance(event, Continue):
                self._write(b"+ Ready for literal data\r\n")
            elif isinstance(event, Refused):
                self._refused(event)
        self._flush()

    @property
    def io_paused(self) -> bool:
        """True after STARTTLS: nothing more may be read until the handshake is done."""
        return self._tls_pending

    def tls_started(self) -> None:
        self._tls_pending = False
        self.tls_active = True

    def timeout(self) -> None:
        """The adapter's inactivity timer fired."""
        self._write(b"* BYE Autologout; idle for too long\r\n")
        self._flush()
        self.shutdown()
        self.io.close()

    def server_stopping(self) -> None:
        self._write(b"* BYE Server shutting down\r\n")
        self._flush()
        self.shutdown()
        self.io.close()

    def shutdown(self) -> None:
        """Forget the store subscription; idempotent (called when the connection ends for any reason)."""
        self.closed = True
        self.state = LOGOUT
        if self._subscribed:
            self.store.unsubscribe(self._listener)
            self._subscribed = False
        self.selected = None

    def _write(self, data: bytes) -> None:
        self._out += data

    def _flush(self) -> None:
        if self._out:
            data = bytes(self._out)
            self._out.clear()
            self._record("S", data)
            self.io.write(data)

    def _record(self, direction: str, data: bytes) -> None:
        """Record protocol lines one by one, each literal as one block (the recorder abbreviates long ones)."""
        if self.transcript is None:
            return
        pos = 0
        n = len(data)
        while pos < n:
            m = _LITERAL_AT_EOL.search(data, pos)
            if m is None:
                chunk, pos = data[pos:], n
                for line in chunk.split(b"\r\n"):
                    if line:
                        self.transcript.record(self.label, direction, line)  # type: ignore[arg-type]
                break
            for line in data[pos:m.end()].split(b"\r\n"):
                if line:
                    self.transcript.record(self.label, direction, line)  # type: ignore[arg-type]
            size = int(m.group(1))
            literal = data[m.end():m.end() + size]
            if size > self.transcript.max_literal:
                literal = f"<{size} octets>".encode()
            self.transcript.record(self.label, direction, literal)  # type: ignore[arg-type]
            pos = m.end() + size

    # -- store events ---------------------------------------------------------------------------------------
    def on_store_event(self, event) -> None:
        if self.closed or event.user != self.user:
            return
        sel = self.selected
        if sel is None:
            return
        if isinstance(event, MailboxDeleted) and event.mailbox == sel.name:
            self._write(b"* BYE Selected mailbox was deleted\r\n")
            self._flush()
            self.shutdown()
            self.io.close()
            return
        if isinstance(event, MailboxRenamed):
            if event.mailbox == sel.name:
                sel.name = event.new_name
            elif sel.name.startswith(event.mailbox + "/"):
                sel.name = event.new_name + sel.name[len(event.mailbox):]
            return
        if getattr(event, "mailbox", None) != sel.name:
            return
        sel.on_event(event, own=event.origin is self)
        if self.idle_tag is not None:
            if self.qresync and sel.pending_expunge:
                # no tagged OK will follow soon: the new HIGHESTMODSEQ goes untagged (as Dovecot does)
                self._write(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % (sel.highestmodseq + MODSEQ_SHIFT))
            self._flush_updates(allow_expunge=True)
            self._expunges_reported = False
            self._flush()

    def _flush_updates(self, allow_expunge: bool) -> None:
        sel = self.selected
        if sel is None:
            return
        if sel.readonly:
            def claim(uids):
                return self.store.peek_recent(self.user, sel.name) & set(uids)
        else:
            def claim(uids):
                return self.store.claim_recent(self.user, sel.name, uids)
        if allow_expunge and sel.pending_expunge:
            self._expunges_reported = True
        sel.flush(self._out, allow_expunge, self.qresync, self.condstore, claim)

    # -- commands -------------------------------------------------------------------------------------------
    def _refused(self, event: Refused) -> None:
        text = f"[{event.code}] {event.reason}" if event.code else event.reason
        if event.tag and self.idle_tag is None and self.auth_tag is None:
            self._write(f"{event.tag} BAD {text}\r\n".encode())
        else:
            self._write(f"* BAD {text}\r\n".encode())

    def _command(self, data: bytes) -> None:
        if self.idle_tag is not None:
            self._idle_line(data)
            return
        if self.auth_tag is not None:
            self._auth_line(data)
            return
        tag = tag_of(data)
        if tag is None:
            lone = tag_of(data + b" x")  # a tag alone on its line: answer it, as Dovecot does
            if lone is not None and len(lone) == len(data):
                self._write(f"{lone} BAD Missing command name\r\n".encode())
            else:
                self._write(b"* BAD Missing or invalid tag\r\n" if data.strip() else b"* BAD Empty command line\r\n")
            return
        lx = Lexer(data, len(tag) + 1)
        name = ""
        try:
            name = lx.atom("command name").upper()
            entry = COMMANDS.get(name)
            if entry is None:
                raise ParseError(f"Unknown command {name[:30]}")
            method, states = entry
            if self.state not in states:
                raise ParseError(f"{name} is not valid in the {self.state} state")
            getattr(self, method)(tag, lx)
        except ParseError as exc:
            self._tagged_updates(name)
            self._write(f"{tag} BAD {exc.text}\r\n".encode())
        except CommandFailed as exc:
            self._tagged_updates(name)
            self._write(f"{tag} NO {exc.text}\r\n".encode())
        except _NoSuchMailbox as exc:
            self._tagged_updates(name)
            self._write(f"{tag} NO [NONEXISTENT] {_one_line(exc)}\r\n".encode())
        except StoreError as exc:
            self._tagged_updates(name)
            self._write(f"{tag} NO {_one_line(exc)}\r\n".encode())
        except Exception:  # a bug must cost one command, never the connection
            log.exception("IMAP %s: internal error in %s", self.peer, name or "?")
            self._write(f"{tag} NO [SERVERBUG] Internal error\r\n".encode())

    def _tagged_updates(self, name: str) -> None:
        if self.state == SELECTED and self.selected is not None:
            self._flush_updates(allow_expunge=name not in NO_EXPUNGE_DURING)

    def ok(self, tag: str, text: str, name: str = "", updates: bool = True) -> None:
        """The tagged OK, preceded by the updates the client is owed."""
        if updates:
            self._tagged_updates(name)
        if self._expunges_reported and self.qresync and self.selected is not None and not text.startswith("["):
            # RFC 7162 3.2.10: after expunges, the mailbox's new HIGHESTMODSEQ (no FETCH carries it)
            text = f"[HIGHESTMODSEQ {self.selected.highestmodseq + MODSEQ_SHIFT}] {text}"
        self._expunges_reported = False
        self._write(f"{tag} OK {text}\r\n".encode())

    def _capabilities(self) -> list[str]:
        return capabilities(self.state in (AUTHENTICATED, SELECTED), self.config.tls_available,
                            self.tls_active, self.config.login_disabled_without_tls)

    def cmd_capability(self, tag: str, lx: Lexer) -> None:
        lx.end()
        self._write(f"* CAPABILITY {' '.join(self._capabilities())}\r\n".encode())
        self.ok(tag, "Capability completed.")

    def cmd_noop(self, tag: str, lx: Lexer) -> None:
        lx.end()
        self.ok(tag, "NOOP completed.")

    def cmd_logout(self, tag: str, lx: Lexer) -> None:
        lx.end()
        self._write(b"* BYE Logging out\r\n")
        self._write(f"{tag} OK Logout completed.\r\n".encode())
        self._flush()
        self.shutdown()
        self.io.close()

    def cmd_starttls(self, tag: str, lx: Lexer) -> None:
        lx.end()
        if not self.config.tls_available:
            raise ParseError("STARTTLS is not available here")
        if self.tls_active:
            raise ParseError("TLS is already active")
        self._write(f"{tag} OK Begin TLS negotiation now.\r\n".encode())
        self._flush()
        self.framer.reset()
        self._tls_pending = True
        self.io.start_tls()

    def cmd_id(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        lx.value()  # NIL or a list of field/value pairs; we only answer
        lx.end()
        self._write(b'* ID ("name" "recall-lab" "vendor" "recall-lab" "support-url" "https://corp.example/")\r\n')
        self.ok(tag, "ID completed.")

    def cmd_enable(self, tag: str, lx: Lexer) -> None:
        names = []
        while lx.maybe_sp():
            names.append(lx.atom("capability").upper())
        if not names:
            raise ParseError("ENABLE needs a capability")
        enabled = []
        for name in names:
            if name in ENABLEABLE and name not in enabled:
                enabled.append(name)
        if enabled:
            self.enable_condstore()
        if "QRESYNC" in enabled:
            self.qresync = True
        self._write(("* ENABLED" + "".join(f" {n}" for n in enabled) + "\r\n").encode())
        self.ok(tag, "Enabled.")

    def cmd_namespace(self, tag: str, lx: Lexer) -> None:
        lx.end()
        self._write(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
        self.ok(tag, "NAMESPACE completed.")

    # -- authentication -------------------------------------------------------------------------------------
    def _login_allowed(self) -> None:
        if self.config.login_disabled_without_tls and not self.tls_active:
            raise CommandFailed("Plaintext authentication is disabled until STARTTLS", "PRIVACYREQUIRED")

    def _logged_in(self, tag: str, user: str) -> None:
        self.user = user
        self.framer.max_literal = self.config.max_literal
        self.store.ensure_user(user)
        self.state = AUTHENTICATED
        if not self._subscribed:
            self.store.subscribe(self._listener)
            self._subscribed = True
        caps = " ".join(self._capabilities())
        self.ok(tag, f"[CAPABILITY {caps}] Logged in", updates=False)

    def _authenticate(self, user: str, password: str) -> str:
        canonical = self.accounts.authenticate(user, password)
        if canonical is None:
            raise CommandFailed("Authentication failed: wrong user name or password", "AUTHENTICATIONFAILED")
        return canonical

    def cmd_login(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        user = lx.astring()
        lx.sp()
        password = lx.astring()
        lx.end()
        self._login_allowed()
        self._logged_in(tag, self._authenticate(user, password))

    def cmd_authenticate(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        mech = lx.atom("mechanism").upper()
        initial = None
        if lx.maybe_sp():
            initial = lx.atom("initial response")
        lx.end()
        if mech != "PLAIN":
            raise CommandFailed(f"Unsupported authentication mechanism {mech[:20]}", "CANNOT")
        self._login_allowed()
        if initial is None:
            self.auth_tag = tag
            self._write(b"+ \r\n")
            return
        self._plain(tag, initial)

    def _auth_line(self, data: bytes) -> None:
        tag = self.auth_tag
        self.auth_tag = None
        assert tag is not None
        try:
            text = data.decode("ascii").strip()
            if text == "*":
                raise ParseError("AUTHENTICATE cancelled")
            self._plain(tag, text)
        except UnicodeDecodeError:
            self._write(f"{tag} BAD Invalid base64\r\n".encode())
        except ParseError as exc:
            self._write(f"{tag} BAD {exc.text}\r\n".encode())
        except CommandFailed as exc:
            self._write(f"{tag} NO {exc.text}\r\n".encode())

    def _plain(self, tag: str, b64: str) -> None:
        try:
            raw = b"" if b64 == "=" else base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ParseError("Invalid base64 in AUTHENTICATE PLAIN") from None
        parts = raw.split(b"\0")
        if len(parts) != 3:
            raise ParseError("AUTHENTICATE PLAIN wants authzid NUL authcid NUL password")
        authz, authc, password = (p.decode("utf-8", "replace") for p in parts)
        user = self._authenticate(authc, password)
        if authz and self.accounts.canonical(authz) != user:
            raise CommandFailed("Authorization identity differs from authentication identity",
                                "AUTHORIZATIONFAILED")
        self._logged_in(tag, user)

    # -- IDLE -----------------------------------------------------------------------------------------------
    def cmd_idle(self, tag: str, lx: Lexer) -> None:
        lx.end()
        self.idle_tag = tag
        self._write(b"+ idling\r\n")
        self._flush_updates(allow_expunge=True)

    def _idle_line(self, data: bytes) -> None:
        tag = self.idle_tag
        self.idle_tag = None
        if data.strip().upper() == b"DONE":
            self.ok(tag, "IDLE terminated.")
        else:
            self._write(f"{tag} BAD Expected DONE to end IDLE\r\n".encode())

    def enable_condstore(self) -> None:
        """CONDSTORE on, by ENABLE or by a command that uses it (RFC 7162 3.1): a selected mailbox's
        HIGHESTMODSEQ is then reported once, since the client has not seen it yet."""
        if self.condstore:
            return
        self.condstore = True
        if self.selected is not None:
            self._write(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % (self.selected.highestmodseq + MODSEQ_SHIFT))

    # -- selection helpers used by the mixins ---------------------------------------------------------------
    def deselect(self) -> None:
        self.selected = None
        if self.state == SELECTED:
            self.state = AUTHENTICATED


def _one_line(exc: BaseException) -> str:
    text = str(exc).replace("\r", " ").replace("\n", " ").strip()
    return text or type(exc).__name__


__all__ = ["ImapSession", "SessionConfig", "SessionIO", "ImapError"]
