"""How many IMAP sessions each user has logged in on one server, and the most one user may have.

Why a cap: what one user's change costs the server grows with the number of that user's sessions. Every
session with the mailbox selected takes each change (a STORE over 2,000 messages seen by 1,000 idling sessions
was 2 million updates and held the event loop for seconds), keeps its own view of the mailbox (0.4 MB per
session for 10,000 messages) and its own list of what to tell its client (an EXPUNGE of 10,000 messages seen
by 300 sessions took 386 MB). Dovecot caps sessions per user and address at 10 (mail_max_userip_connections);
the lab's clients all come from one address, so the cap is per user, and wider.
"""

from __future__ import annotations

from typing import Protocol


class SubscriptionWatcher(Protocol):
    def notify_subscription(self, user: str, name: str, subscribed: bool, origin: object) -> bool: ...

#: Default: a desktop client opens a handful of sessions, imaptest's stress run ten.
DEFAULT_MAX_USER_SESSIONS = 32


class UserSessions:
    """Logged-in sessions per user, shared by one server's connections."""

    def __init__(self, limit: int | None = DEFAULT_MAX_USER_SESSIONS) -> None:
        """`limit`: sessions one user may have at once (None: no limit)."""
        self.limit = limit
        self._count: dict[str, int] = {}
        #: Sessions told of SUBSCRIBE / UNSUBSCRIBE (NOTIFY SubscriptionChange; the store has no such event).
        self._watchers: set[SubscriptionWatcher] = set()

    def enter(self, user: str) -> bool:
        """Count a new session of `user`; False (and nothing counted) when the user is at the limit."""
        count = self._count.get(user, 0)
        if self.limit is not None and count >= self.limit:
            return False
        self._count[user] = count + 1
        return True

    def leave(self, user: str) -> None:
        count = self._count.get(user, 0) - 1
        if count > 0:
            self._count[user] = count
        else:
            self._count.pop(user, None)

    def count(self, user: str) -> int:
        return self._count.get(user, 0)

    def watch(self, watcher: SubscriptionWatcher) -> None:
        """Tell `watcher` of every (un)subscription on this server until `unwatch`."""
        self._watchers.add(watcher)

    def unwatch(self, watcher: SubscriptionWatcher) -> None:
        self._watchers.discard(watcher)

    def subscription_changed(self, user: str, name: str, subscribed: bool, origin: object) -> None:
        for watcher in list(self._watchers):
            watcher.notify_subscription(user, name, subscribed, origin)
