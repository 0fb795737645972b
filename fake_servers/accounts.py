"""Accounts of a mail server: who may log in, with which password.

Why its own module: IMAP LOGIN/AUTHENTICATE and SMTP AUTH must agree on who a user is. A user's name is the
full address (alice@corp.example); names compare case-insensitively and are kept in lower case.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Mapping


class Accounts(Mapping[str, str]):
    """A read-only map from address to password, with the checks both protocols use."""

    def __init__(self, users: Mapping[str, str] | None = None) -> None:
        self._users: dict[str, str] = {}
        for user, password in (users or {}).items():
            self.add(user, password)

    def add(self, user: str, password: str) -> None:
        self._users[user.strip().lower()] = password

    def authenticate(self, user: str, password: str) -> str | None:
        """The canonical user name when the password is right, else None (constant-time compare)."""
        key = user.strip().lower()
        expected = self._users.get(key)
        if expected is None:
            hmac.compare_digest(password.encode(), password.encode())
            return None
        if hmac.compare_digest(expected.encode("utf-8"), password.encode("utf-8")):
            return key
        return None

    def canonical(self, user: str) -> str | None:
        """The stored spelling of a user name, or None when there is no such user."""
        key = user.strip().lower()
        return key if key in self._users else None

    def domains(self) -> set[str]:
        return {user.rpartition("@")[2] for user in self._users}

    def __getitem__(self, user: str) -> str:
        return self._users[user.strip().lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._users)

    def __len__(self) -> int:
        return len(self._users)
