"""The value model of IMAP response data, shared by the code that builds data and the serialiser.

Python value -> IMAP:  None -> NIL;  int -> number;  str -> quoted string (a literal when it cannot be
quoted: CR, LF, NUL or 8-bit that the client did not enable);  bytes -> literal {n};  list/tuple ->
parenthesised list;  Atom -> written as is (flags, keywords, FETCH item names, BODY[...] labels).
Why: ENVELOPE and BODYSTRUCTURE builders return plain nested Python data; only the serialiser decides
quoting, so what it writes parses back the same.
"""

from __future__ import annotations


class Atom(str):
    """A string written verbatim, unquoted (e.g. \\Seen, UID, BODY[HEADER])."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


ImapValue = None | int | str | bytes | Atom | list["ImapValue"] | tuple["ImapValue", ...]
