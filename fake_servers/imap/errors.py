"""The two ways a command can fail, mirroring the two IMAP failure responses.

Why exceptions: deep inside argument parsing or a store call, raising is the simplest way to abandon the
command; the session turns them into exactly one tagged response, so no error can escape as a traceback.
"""

from __future__ import annotations


class ImapError(Exception):
    """Base: `code` is an RFC 5530 response code (e.g. "TOOBIG") or None; the message is shown to the client."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def text(self) -> str:
        message = str(self).replace("\r", " ").replace("\n", " ")
        return f"[{self.code}] {message}" if self.code else message


class ParseError(ImapError):
    """The command is malformed: tagged BAD (or untagged * BAD when no tag could be read)."""


class CommandFailed(ImapError):
    """The command is well formed but cannot be done: tagged NO."""
