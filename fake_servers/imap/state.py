"""The IMAP session's states, what each allows and how events move between them, in one place.

Why one explicit state: a session that is idling, half-way through AUTHENTICATE or waiting for a TLS handshake
reads its input differently (a DONE line, a base64 response, nothing at all). Kept as optional fields beside
the RFC 3501 states, every check had to combine them; here each of those conditions is a state of its own, the
commands each state accepts are one table, the moves are another, and `StateMachine.handle` is the only code
that changes the state, so a move the table does not list is a bug that raises instead of a silent mix-up.

`SessionCore` declares, once and with their types, the attributes and methods the command mixins
(mailbox_commands.py, message_commands.py) use from the session they are mixed into.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..accounts import Accounts
    from ..store.base import MailStore
    from .selected import SelectedMailbox
    from .session import SessionConfig
    from .view_cache import ViewCache


class SessionState(enum.StrEnum):
    """The states of one connection. The values are the names used in replies ("… is not valid in the
    authenticated state")."""

    NOT_AUTHENTICATED = "not authenticated"
    #: AUTHENTICATE sent its continuation: the next line is the client's response, not a command.
    AUTHENTICATING = "authenticating"
    #: STARTTLS answered: nothing is read or run until the handshake is done.
    STARTTLS_PENDING = "starttls pending"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    #: IDLE answered: the next line must be DONE; changes are pushed meanwhile.
    IDLE = "idle"
    LOGOUT = "logout"


class Event(enum.Enum):
    """What moves a session from one state to another."""

    LOGGED_IN = "logged in"  # LOGIN or AUTHENTICATE succeeded
    AUTH_CONTINUE = "authenticate continue"  # AUTHENTICATE without initial response sent "+ "
    AUTH_RESPONSE = "authenticate response"  # the response line arrived (checked in NOT_AUTHENTICATED)
    STARTTLS = "starttls"  # STARTTLS answered OK
    TLS_STARTED = "tls started"  # the handshake is done
    SELECTED = "selected"  # SELECT / EXAMINE succeeded
    DESELECTED = "deselected"  # CLOSE, UNSELECT, a failed SELECT, the selected mailbox deleted by us
    IDLE = "idle"  # IDLE answered "+ idling"
    DONE = "done"  # the line ending IDLE arrived (DONE or not)
    LOGOUT = "logout"  # LOGOUT, timeout, connection lost, server stopping: from any state


S = SessionState
_ANY = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID"})
_AUTH = _ANY | {"ENABLE", "NAMESPACE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
                "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "IDLE", "NOTIFY", "COMPRESS"}

#: The commands each state accepts. In the states not listed with commands, a line is not a command
#: (AUTHENTICATING, IDLE) or is not read at all (STARTTLS_PENDING, LOGOUT).
ALLOWED: dict[SessionState, frozenset[str]] = {
    S.NOT_AUTHENTICATED: _ANY | {"STARTTLS", "LOGIN", "AUTHENTICATE"},
    S.AUTHENTICATING: frozenset(),
    S.STARTTLS_PENDING: frozenset(),
    S.AUTHENTICATED: _AUTH,
    S.SELECTED: _AUTH | {"CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "SORT", "FETCH", "STORE", "COPY",
                         "MOVE", "UID", "CANCELUPDATE", "THREAD"},
    S.IDLE: frozenset(),
    S.LOGOUT: frozenset(),
}

#: Leaving IDLE goes back to the state IDLE was entered from (AUTHENTICATED or SELECTED).
RESUME = "resume"

#: state -> event -> next state. LOGOUT is reachable from every state and absorbs every event.
TRANSITIONS: dict[SessionState, dict[Event, SessionState | str]] = {
    S.NOT_AUTHENTICATED: {Event.LOGGED_IN: S.AUTHENTICATED, Event.AUTH_CONTINUE: S.AUTHENTICATING,
                          Event.STARTTLS: S.STARTTLS_PENDING},
    S.AUTHENTICATING: {Event.AUTH_RESPONSE: S.NOT_AUTHENTICATED},
    S.STARTTLS_PENDING: {Event.TLS_STARTED: S.NOT_AUTHENTICATED},
    S.AUTHENTICATED: {Event.SELECTED: S.SELECTED, Event.IDLE: S.IDLE},
    S.SELECTED: {Event.SELECTED: S.SELECTED, Event.DESELECTED: S.AUTHENTICATED, Event.IDLE: S.IDLE},
    S.IDLE: {Event.DONE: RESUME},
    S.LOGOUT: {event: S.LOGOUT for event in Event},
}
for _moves in TRANSITIONS.values():
    _moves.setdefault(Event.LOGOUT, S.LOGOUT)

#: The states before a login (the adapter's pre-login time budget applies).
PRE_AUTH = frozenset({S.NOT_AUTHENTICATED, S.AUTHENTICATING, S.STARTTLS_PENDING})


class InvalidTransition(RuntimeError):
    """An event the table does not allow in the current state: a bug in the session, never a client error."""


class StateMachine:
    """The current state, changed only by `handle`."""

    __slots__ = ("_state", "_resume")

    def __init__(self) -> None:
        self._state = S.NOT_AUTHENTICATED
        self._resume = S.AUTHENTICATED  # the state IDLE returns to; meaningful only in IDLE

    @property
    def state(self) -> SessionState:
        return self._state

    def handle(self, event: Event) -> SessionState:
        """Move on `event` as TRANSITIONS says; raise InvalidTransition for a move it does not list."""
        target = TRANSITIONS[self._state].get(event)
        if target is None:
            raise InvalidTransition(f"{event.value} in the {self._state} state")
        if target == RESUME:
            target = self._resume
        elif target is S.IDLE:
            self._resume = self._state
        assert isinstance(target, SessionState)
        self._state = target
        return target


class SessionCore:
    """What the command mixins use from the session they are mixed into, declared once with its type (the
    session sets the attributes in its constructor and defines the methods)."""

    store: MailStore
    accounts: Accounts
    config: SessionConfig
    cache: ViewCache
    peer: str
    user: str | None
    selected: SelectedMailbox | None
    condstore: bool
    qresync: bool
    rev2: bool  # IMAP4rev2 enabled (rev2.py)
    _out: bytearray

    if TYPE_CHECKING:
        @property
        def state(self) -> SessionState: ...

        def _transition(self, event: Event) -> SessionState: ...

        def _write(self, data: bytes) -> None: ...

        def ok(self, tag: str, text: str, name: str = "", updates: bool = True) -> None: ...

        def _tagged_updates(self, name: str) -> None: ...

        def deselect(self) -> None: ...

        def enable_condstore(self) -> None: ...

        def wire_name(self, name: str) -> bytes: ...  # a mailbox name as this session writes it (rev2.py)

