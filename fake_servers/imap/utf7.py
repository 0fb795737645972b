"""Modified UTF-7 (RFC 3501 5.1.3), the encoding of IMAP4rev1 mailbox names on the wire.

Why a module of its own: the store keeps mailbox names as Unicode; only the protocol edge converts, both ways,
and the codec must round-trip every name exactly (tested with hypothesis).
"""

from __future__ import annotations

import base64


class Utf7Error(ValueError):
    """The text is not valid modified UTF-7."""


def _is_direct(ch: str) -> bool:
    return 0x20 <= ord(ch) <= 0x7E


def encode(name: str) -> str:
    """Unicode mailbox name -> modified UTF-7 (ASCII only)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be", "surrogatepass")
            b64 = base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",")
            out.append(f"&{b64}-")
            pending.clear()

    for ch in name:
        if _is_direct(ch):
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode(text: str) -> str:
    """Modified UTF-7 -> Unicode; raises Utf7Error for malformed input."""
    if "&" not in text:
        if any(not _is_direct(ch) for ch in text):
            raise Utf7Error("mailbox name has characters outside printable ASCII")
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "&":
            if not _is_direct(ch):
                raise Utf7Error("mailbox name has characters outside printable ASCII")
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise Utf7Error("unterminated &... sequence in mailbox name")
        chunk = text[i + 1:end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        if any(c not in _B64_CHARS for c in chunk) or len(chunk) % 4 == 1:
            raise Utf7Error("bad base64 in mailbox name")
        raw = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4))
        if len(raw) % 2:
            raise Utf7Error("odd number of octets in mailbox name")
        try:
            decoded = raw.decode("utf-16-be")
        except UnicodeDecodeError as exc:
            raise Utf7Error("bad UTF-16 in mailbox name") from exc
        if any(_is_direct(c) for c in decoded):
            raise Utf7Error("printable ASCII must not be base64-encoded in a mailbox name")
        out.append(decoded)
    return "".join(out)


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def decode_lenient(text: str) -> str:
    """Decode a name a client sent: modified UTF-7, or raw UTF-8 (which some clients send) kept as is."""
    if any(ord(c) > 0x7E for c in text):
        return text
    return decode(text)
