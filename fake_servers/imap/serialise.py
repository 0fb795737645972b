"""Writing IMAP response data (the values.py model) as bytes.

Why one place: only this module decides between atom, quoted string and literal, so whatever the builders
return is written in a form that parses back to the same value (tested with hypothesis).
"""

from __future__ import annotations

from .errors import ParseError
from .values import Atom, ImapValue

_QUOTE_BAD = frozenset(range(0, 0x20)) | {0x7F}


def _string(text: str, utf8: bool) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    if (not utf8 and not data.isascii()) or any(b in _QUOTE_BAD for b in data) or len(data) > 1024:
        return b"{%d}\r\n%b" % (len(data), data)
    if b'"' in data or b"\\" in data:
        data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + data + b'"'


def serialise(value: ImapValue, utf8: bool = False) -> bytes:
    """One value as IMAP bytes."""
    out = bytearray()
    _write(value, out, utf8)
    return bytes(out)


def _write(value: ImapValue, out: bytearray, utf8: bool) -> None:
    if value is None:
        out += b"NIL"
    elif isinstance(value, Atom):
        out += value.encode("utf-8")
    elif isinstance(value, bool):
        raise TypeError("bool is not an IMAP value")
    elif isinstance(value, int):
        out += str(value).encode("ascii")
    elif isinstance(value, str):
        out += _string(value, utf8)
    elif isinstance(value, bytes | bytearray | memoryview):
        out += b"{%d}\r\n" % len(value)
        out += value
    elif isinstance(value, list | tuple):
        out += b"("
        first = True
        for item in value:
            if not first:
                out += b" "
            first = False
            _write(item, out, utf8)
        out += b")"
    else:
        raise TypeError(f"not an IMAP value: {type(value).__name__}")


def quote(text: str) -> bytes:
    """A string argument (quoted, or a literal when it must be)."""
    return _string(text, False)


def parse_value(data: bytes, max_depth: int = 200):
    """Parse one value written by `serialise` back into the model (for tests and clients of this package).

    Strings come back as str (quoted) or bytes (literal): a str that had to be written as a literal returns bytes.
    Lists nest at most `max_depth` deep (BODYSTRUCTURE of a deeply nested message is the deepest we write);
    deeper input is a ParseError, never a RecursionError.
    """
    from .lexer import Lexer

    lx = Lexer(data)
    value = _read(lx, max_depth)
    lx.end()
    return value


def _read(lx, depth: int):
    c = lx.peek()
    if c == 0x28:
        if depth <= 0:
            raise ParseError("lists nested too deeply")
        return lx.paren_list(lambda: _read(lx, depth - 1))
    if c == 0x22:
        return lx.quoted().decode("utf-8", "surrogateescape")
    if c == 0x7B:
        return lx.literal()
    text = lx.atom("value")
    if text == "NIL":
        return None
    if text.isdigit() and text.isascii() and (text == "0" or not text.startswith("0")):
        return int(text)
    return Atom(text)
