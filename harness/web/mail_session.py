"""Webmail logins: server-side sessions, bounded in number and in idle lifetime.

Why server-side: the webmail is an IMAP client of the lab, so it needs the user's password for every request it
makes on the user's behalf. The password therefore stays in this process, in the session, and the browser only
holds a random session id (an HttpOnly, SameSite=Strict cookie that page script cannot read and another site
cannot send). A session that has not been used for `IDLE_LIFETIME` seconds is gone; when `MAX_SESSIONS` are
open, a new login pushes out the one unused longest, so logins cannot grow memory without bound.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

#: The cookie that carries the session id.
SESSION_COOKIE = "recall_lab_mail"
#: Logins kept at once; the least recently used goes first.
MAX_SESSIONS = 256
#: Seconds a session lives without a request.
IDLE_LIFETIME = 30 * 60.0


@dataclass
class MailSession:
    """One login: who, the password to speak IMAP with, and the push streams it holds open."""

    id: str
    user: str
    password: str = field(repr=False)
    last_used: float = 0.0
    streams: int = 0


class SessionStore:
    """The open logins of one webmail; see the module docstring."""

    def __init__(self, *, max_sessions: int = MAX_SESSIONS, idle_lifetime: float = IDLE_LIFETIME,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self.idle_lifetime = idle_lifetime
        self.clock = clock
        self._sessions: OrderedDict[str, MailSession] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._sessions)

    def create(self, user: str, password: str) -> MailSession:
        self._expire()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session = MailSession(secrets.token_urlsafe(32), user, password, self.clock())
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> MailSession | None:
        """The live session with this id (its idle time restarts), or None."""
        if not session_id:
            return None
        self._expire()
        session = self._sessions.get(session_id)
        if session is None:
            return None
        session.last_used = self.clock()
        self._sessions.move_to_end(session_id)
        return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def _expire(self) -> None:
        cutoff = self.clock() - self.idle_lifetime
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.last_used > cutoff:
                break
            self._sessions.popitem(last=False)
