"""AUTHENTICATE SCRAM-SHA-256 (RFC 7677 over RFC 5802; SASL in IMAP per RFC 9051 6.2.2, with SASL-IR).

Why a library: the mechanism's messages, nonces, SASLprep and proof check are `scramp`'s, a maintained
implementation; this module only fits it to the session (its states, its login throttle, its bounds).

Why a credential cache: the lab's accounts hold plain-text passwords, and SCRAM checks a proof against keys
derived from the password by PBKDF2 (4096 iterations, RFC 7677's minimum, a few milliseconds of CPU). They are
derived once per account and password (a changed password is a new key of the cache) and kept, so a login costs
that PBKDF2 at most once per account, never once per attempt. The server's adapter runs the derivation in a thread
(`SessionIO.offload`, optional: PBKDF2 releases the GIL) while the session reads nothing, so it never holds the
event loop; without the hook (sans-I/O tests) it runs inline.

Why unknown users get made-up credentials: answering "unknown-user" at the first message would tell a guesser
which addresses exist. An unknown name gets a salt that is stable per name (an HMAC under a per-process secret)
and random keys, costs no PBKDF2, and fails at the proof exactly as a wrong password does: NO
[AUTHENTICATIONFAILED], counted by the login throttle (guard.py) with the same delay, penalty and hang-up as a
wrong LOGIN. A malformed message tests no password: NO with the reason, at once, not counted.

Channel binding: no -PLUS mechanism is announced. A client that asks for binding (gs2 flag `p=`) gets RFC 5802's
`channel-binding-not-supported`; flag `y` (the client could bind but believes the server cannot) is accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable

from scramp import ScramException, ScramMechanism
from scramp.core import ScramServer

from ..accounts import Accounts
from ..guard import FailureVerdict, LoginThrottle
from .errors import CommandFailed, ParseError
from .state import Event

log = logging.getLogger("recall_lab.fake_servers.imap")
MECHANISM = "SCRAM-SHA-256"
#: PBKDF2 iterations: RFC 7677's minimum (and what its example uses).
ITERATIONS = 4096
#: Most octets a client message may have once decoded. A client-first is a GS2 header, a user name and a nonce;
#: a client-final a nonce and a proof: a few hundred octets at most.
MAX_MESSAGE = 2048
#: Accounts whose derived keys are kept (the oldest are derived again when more log in).
CACHE_SIZE = 4096

Credentials = tuple[bytes, bytes, bytes, int]  # salt, StoredKey, ServerKey, iterations

_MECH = ScramMechanism(MECHANISM)
_SECRET = os.urandom(32)
_cache: OrderedDict[tuple[str, str], Credentials | None] = OrderedDict()
_cache_lock = threading.Lock()


def new_salt() -> bytes:
    """A fresh salt for an account's keys (tests replace it to replay RFC 7677's example)."""
    return os.urandom(16)


def new_nonce() -> str | None:
    """The server's part of the nonce; None: scramp makes a random one (tests replace it)."""
    return None


def derive(user: str, password: str) -> Credentials | None:
    """The account's SCRAM keys, derived once per (user, password) and cached; None when SASLprep refuses the
    password (then SCRAM cannot check it, and every proof fails). Safe to call from a thread."""
    key = (user, password)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        salt, stored, server, iterations = _MECH.make_auth_info(password, ITERATIONS, salt=new_salt())
        creds: Credentials | None = (salt, stored, server, iterations)
    except ScramException:
        creds = None
    with _cache_lock:
        creds = _cache.setdefault(key, creds)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return creds


def cached(user: str, password: str) -> bool:
    with _cache_lock:
        return (user, password) in _cache


def forget_cache() -> None:
    """Drop every derived key (tests)."""
    with _cache_lock:
        _cache.clear()


def _decoy(user: str) -> Credentials:
    """Credentials no proof matches, with a salt that does not change between attempts (see the docstring)."""
    salt = hmac.new(_SECRET, user.encode("utf-8", "replace"), hashlib.sha256).digest()[:16]
    return salt, os.urandom(32), os.urandom(32), ITERATIONS


class _Underived(Exception):
    """The account's keys are not derived yet and the adapter can derive them off the event loop."""

    def __init__(self, user: str, password: str) -> None:
        super().__init__(user)
        self.user, self.password = user, password


def _decode(text: str, what: str) -> str:
    if len(text) > 4 * ((MAX_MESSAGE + 2) // 3):
        raise CommandFailed(f"{MECHANISM} {what} longer than {MAX_MESSAGE} octets")
    try:
        raw = b"" if text == "=" else base64.b64decode(text, validate=True)  # "=": empty (RFC 4959)
    except (binascii.Error, ValueError):
        raise ParseError(f"Invalid base64 in AUTHENTICATE {MECHANISM}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandFailed(f"{MECHANISM} {what} is not UTF-8 (invalid-encoding)") from None


def _reason(exc: ScramException) -> str:
    text = " ".join(str(exc).split())[:200]
    return text.encode("ascii", "replace").decode()


class _RawGs2Header:
    """The GS2 header as the client sent it, authzid included: what its `c=` must repeat (RFC 5802 5.1).

    scramp's server takes no authzid, but Cyrus SASL's client (mbsync) always sends one, equal to the user
    name. So the authzid is taken out of the client-first message before scramp sees it (the proof covers only
    the bare part and `c=`), and this stands in for scramp's parsed header when `c=` is compared."""

    def __init__(self, raw: str) -> None:
        self.raw = raw.encode()

    def make_cbind_input(self, cb: object) -> bytes:
        return self.raw


def _split_authzid(message: str) -> tuple[str, str, str]:
    """(message without the authzid, the authzid or "", the GS2 header as sent)."""
    parts = message.split(",", 2)
    if len(parts) < 3 or not parts[1].startswith("a="):
        return message, "", ""
    authzid = parts[1][2:].replace("=2C", ",").replace("=3D", "=")
    return f"{parts[0]},,{parts[2]}", authzid, f"{parts[0]},{parts[1]},"


class _Exchange:
    """One AUTHENTICATE SCRAM-SHA-256 under way: scramp's server, the step it waits for, who is logging in."""

    def __init__(self, server: ScramServer) -> None:
        self.server = server
        self.step = "first"  # "first", "final" (client-final), "done" (the empty answer to server-final)
        self.user: str | None = None  # the account, or None for a name no account has
        self.inline = False  # derive in the loop (the thread's derivation failed, or no offload hook)
        self.authzid = ""  # the identity asked for, when the client named one (it must be the user's own)


class ScramCommands:
    """The session's side of SCRAM-SHA-256 (mixed into ImapSession)."""

    accounts: Accounts
    io: object
    auth_tag: str
    _scram: _Exchange | None = None

    # provided by ImapSession
    _throttle: LoginThrottle | None
    _auth_pending: tuple[str, Callable[[], None]] | None
    _auth_hold: FailureVerdict | None
    _transition: Callable[[Event], object]
    _write: Callable[[bytes], None]
    _auth_failed: Callable[[], None]
    _logged_in: Callable[[str, str], None]

    @property
    def scram_active(self) -> bool:
        return self._scram is not None

    def scram_start(self, tag: str, initial: str | None) -> None:
        """AUTHENTICATE SCRAM-SHA-256, with or without the client-first message as initial response."""
        self._scram = _Exchange(_MECH.make_server(self._scram_credentials, s_nonce=new_nonce()))
        if initial is None:
            self._scram_continue(tag, b"")
            return
        self.scram_line(tag, initial)

    def scram_line(self, tag: str, text: str) -> None:
        """The client's next message; any failure ends the exchange (the caller writes the tagged reply)."""
        exchange = self._scram
        assert exchange is not None
        try:
            if exchange.step == "first":
                self._scram_first(tag, exchange, _decode(text, "client-first message"))
            elif exchange.step == "final":
                self._scram_final(tag, exchange, _decode(text, "client-final message"))
            else:
                self._scram = None
                if text:
                    raise CommandFailed(f"{MECHANISM}: the answer to the server-final message must be empty")
                self._logged_in(tag, exchange.user or "")
        except (ParseError, CommandFailed):
            self._scram = None
            raise
        except Exception as exc:  # noqa: BLE001 - a client's bytes must never cost a traceback
            log.warning("%s: unexpected error in a client's message", MECHANISM, exc_info=True)
            self._scram = None
            raise CommandFailed(f"{MECHANISM}: malformed message") from exc

    def scram_end(self) -> None:
        self._scram = None

    def _scram_continue(self, tag: str, payload: bytes) -> None:
        self.auth_tag = tag
        self._transition(Event.AUTH_CONTINUE)
        self._write(b"+ " + base64.b64encode(payload) + b"\r\n")

    def _scram_credentials(self, name: str) -> Credentials:
        """scramp's auth_fn: the keys of the account `name` (SASLprep'd by scramp)."""
        exchange = self._scram
        assert exchange is not None
        user = self.accounts.canonical(name)
        if user is None:
            return _decoy(name)
        password = self.accounts[user]
        if not exchange.inline and not cached(user, password) and getattr(self.io, "offload", None) is not None:
            raise _Underived(user, password)
        creds = derive(user, password)
        if creds is None:
            return _decoy(name)
        exchange.user = user
        return creds

    def _scram_first(self, tag: str, exchange: _Exchange, message: str) -> None:
        bare, exchange.authzid, header = _split_authzid(message)
        try:
            exchange.server.set_client_first(bare)
        except ScramException as exc:
            underived = exc.__cause__
            if isinstance(underived, _Underived):
                self._scram_offload(tag, message, underived)
                return
            if message[:2] == "p=":
                raise CommandFailed(f"{MECHANISM}: channel-binding-not-supported "
                                    f"(no {MECHANISM}-PLUS here)") from None
            raise CommandFailed(f"{MECHANISM}: {_reason(exc)}") from None
        if header:
            exchange.server.gs2_header = _RawGs2Header(header)
        exchange.step = "final"
        self._scram_continue(tag, exchange.server.get_server_first().encode())

    def _scram_offload(self, tag: str, message: str, need: _Underived) -> None:
        """Derive the account's keys in the adapter's thread; the session holds (reads and runs nothing) until
        `release_hold`, which then takes the client-first message again, with the keys cached."""
        exchange = self._scram
        assert exchange is not None
        user, password = need.user, need.password

        def resume() -> None:
            fresh = _Exchange(_MECH.make_server(self._scram_credentials, s_nonce=str(exchange.server.s_nonce)))
            fresh.inline = True  # if the thread failed, derive here rather than loop
            self._scram = fresh
            self.scram_line(tag, base64.b64encode(message.encode()).decode())

        self._auth_pending = (tag, resume)
        self._auth_hold = FailureVerdict(0.0, disconnect=False)
        self.io.offload(lambda: derive(user, password))  # type: ignore[attr-defined]

    def _scram_final(self, tag: str, exchange: _Exchange, message: str) -> None:
        wait = self._throttle.penalty() if self._throttle is not None else 0.0
        if wait > 0:  # as LOGIN: under penalty the proof is not even checked until the wait is over
            def check() -> None:
                self._scram_verify(tag, exchange, message)

            self._auth_pending = (tag, check)
            self._auth_hold = FailureVerdict(wait, disconnect=False)
            self.io.hold(wait)  # type: ignore[attr-defined]
            return
        self._scram_verify(tag, exchange, message)

    def _scram_verify(self, tag: str, exchange: _Exchange, message: str) -> None:
        self._scram = exchange
        try:
            try:
                exchange.server.set_client_final(message)
            except ScramException as exc:
                if exc.server_error is not None and exc.server_error.value == "invalid-proof":
                    self._auth_failed()
                    raise CommandFailed("Authentication failed: wrong user name or password",
                                        "AUTHENTICATIONFAILED") from None
                raise CommandFailed(f"{MECHANISM}: {_reason(exc)}") from None
            if exchange.user is None:  # a decoy's keys are random: no proof can match them
                self._auth_failed()
                raise CommandFailed("Authentication failed: wrong user name or password", "AUTHENTICATIONFAILED")
            if exchange.authzid and self.accounts.canonical(exchange.authzid) != exchange.user:
                self._auth_failed()  # as AUTHENTICATE PLAIN with another authzid
                raise CommandFailed("Authorization identity differs from authentication identity",
                                    "AUTHORIZATIONFAILED")
        except CommandFailed:
            self._scram = None
            raise
        exchange.step = "done"
        self._scram_continue(tag, exchange.server.get_server_final().encode())


__all__ = ["ITERATIONS", "MAX_MESSAGE", "MECHANISM", "ScramCommands", "cached", "derive", "forget_cache"]
