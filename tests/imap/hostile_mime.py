"""Messages built to make a MIME parser spend: a million empty parts, deep nesting, huge header blocks.

Shared by tests/imap/test_mime_limits.py and scripts/bench_mime.py, so the benchmark measures exactly what
the tests bound. Each builder takes a scale (`n`) so tests can use small versions and the benchmark the
full ones (the defaults: about 10 MB each, the size of the message in the issue).
"""

from __future__ import annotations

from collections.abc import Callable

HEAD = b"From: mallory@evil.example\r\nTo: bob@corp.example\r\nSubject: hostile\r\nMessage-ID: <hostile@evil.example>\r\n"


def empty_parts(n: int = 1_400_000) -> bytes:
    """n empty MIME parts in one multipart (7 bytes each: the 9.8 MB message of the issue)."""
    return (HEAD + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            + b"--b\r\n\r\n" * n + b"--b--\r\n")


def typed_parts(n: int = 120_000) -> bytes:
    """n small text parts, each with a Content-Type of its own (the parameters change from part to part)."""
    parts = b"".join(b"--b\r\nContent-Type: text/plain; charset=utf-8; name=\"p%d.txt\"\r\n\r\np%d\r\n" % (i, i)
                     for i in range(n))
    return HEAD + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"


def nested_rfc822(n: int = 100_000) -> bytes:
    """n message/rfc822 parts, each the only content of the one before."""
    return HEAD + b"MIME-Version: 1.0\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * n + b"x\r\n"


def nested_multipart(n: int = 100_000) -> bytes:
    """n multiparts nested in each other, each with a boundary of its own (many prefixes of others)."""
    return HEAD + b"MIME-Version: 1.0\r\n" + b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(n)) + b"\r\nx\r\n"


def huge_header(n: int = 1_000_000) -> bytes:
    """A header block of n tiny fields."""
    return HEAD + b"".join(b"X%d: y\r\n" % (i % 10) for i in range(n)) + b"\r\nbody\r\n"


def long_boundary_lines(n: int = 100) -> bytes:
    """A boundary parameter of 100,000 bytes and n boundary lines as long, with parts between them."""
    b = b"b" * 100_000
    return (HEAD + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"" + b + b"\"\r\n\r\n"
            + (b"--" + b + b"\r\n\r\nx\r\n") * n + b"--" + b + b"--\r\n")


def deep_body(n: int = 10_000_000, depth: int = 98) -> bytes:
    """A text body of n bytes under `depth` nested multiparts: every level's boundary is searched for over it."""
    head = b"".join(b"Content-Type: multipart/mixed; boundary=z%02d\r\n\r\n--z%02d\r\n" % (i, i) for i in range(depth))
    tail = b"".join(b"\r\n--z%02d--\r\n" % i for i in reversed(range(depth)))
    return HEAD + b"MIME-Version: 1.0\r\n" + head + b"Content-Type: text/plain\r\n\r\n" + (
        b"y" * 76 + b"\r\n") * (n // 78) + tail


#: name -> (builder, the MimeLimits field a message of the default size exceeds, or None)
HOSTILE: dict[str, tuple[Callable[..., bytes], str | None]] = {
    "empty_parts": (empty_parts, "max_parts"),
    "typed_parts": (typed_parts, "max_parts"),
    "nested_rfc822": (nested_rfc822, "max_depth"),
    "nested_multipart": (nested_multipart, "max_depth"),
    "huge_header": (huge_header, "max_header_fields"),
    "long_boundary_lines": (long_boundary_lines, None),
    "deep_body": (deep_body, "max_scan_passes"),
}
