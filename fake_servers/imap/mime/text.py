"""Decoding of header and body text for SEARCH (RFC 2047 words, transfer encodings, charsets).

Why separate from the structure code: SEARCH wants human text ("Café", not "=?utf-8?q?Caf=C3=A9?="),
FETCH wants the raw bytes; keeping the lossy decoding here means the FETCH path never pays for it.
Everything is forgiving: undecodable input gives replacement characters, never an exception.
"""

from __future__ import annotations

import binascii
import codecs
import quopri
from email.header import decode_header, make_header


def unfold(value: bytes) -> str:
    """A raw header value (bytes after the colon) as one line of text, 8-bit read as UTF-8."""
    text = value.decode("utf-8", "replace")
    return " ".join(text.replace("\r", "").replace("\n", " ").split()) if text else ""


def decode_words(text: str) -> str:
    """RFC 2047 encoded-words decoded; the text as is when it holds none or they are broken."""
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # noqa: BLE001 - any malformed word: fall back to the raw text
        return text


def _charset_codec(charset: str | None) -> str:
    if not charset:
        return "ascii"
    name = charset.strip().strip('"').lower()
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"


def decode_body(data: bytes, transfer_encoding: str | None, charset: str | None) -> str:
    """A text part's content as str: transfer encoding then charset undone, errors replaced."""
    enc = (transfer_encoding or "").strip().lower()
    if enc == "base64":
        try:
            data = binascii.a2b_base64(b"".join(data.split()))
        except (binascii.Error, ValueError):
            data = b""
    elif enc == "quoted-printable":
        data = quopri.decodestring(data)
    codec = _charset_codec(charset)
    if codec == "ascii":
        codec = "utf-8"  # us-ascii declared but 8-bit sent is common; UTF-8 is the better guess
    return data.decode(codec, "replace")
