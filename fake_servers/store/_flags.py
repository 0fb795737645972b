"""Flag spelling: the store keeps system flags in their RFC 3501 spelling and keywords as given.

Why here: IMAP clients send "\\seen" or "\\SEEN"; if the store kept those as written, a search for \\Seen
and the unseen count would miss them.
"""

from __future__ import annotations

from collections.abc import Iterable

from recall_lab.fake_servers.store.base import SYSTEM_FLAGS, StoreError

_SYSTEM_BY_UPPER = {flag.upper(): flag for flag in SYSTEM_FLAGS}
#: Characters RFC 3501 does not allow in an atom (so not in a keyword either).
_NOT_ATOM = frozenset('(){ %*"\\]') | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}


def normalize_flags(flags: Iterable[str]) -> frozenset[str]:
    """System flags in canonical case, keywords checked; \\Recent is dropped (it lives in IMAP sessions)."""
    if isinstance(flags, str):
        flags = (flags,)
    out: set[str] = set()
    for flag in flags:
        if not isinstance(flag, str) or not flag:
            raise StoreError(f"Invalid flag: {flag!r}")
        if flag.startswith("\\"):
            upper = flag.upper()
            if upper == "\\RECENT":
                continue
            canonical = _SYSTEM_BY_UPPER.get(upper)
            if canonical is None:
                raise StoreError(f"Unknown system flag: {flag}")
            out.add(canonical)
        elif _NOT_ATOM.intersection(flag) or not flag.isascii():
            raise StoreError(f"Invalid keyword: {flag!r}")
        else:
            out.add(flag)
    return frozenset(out)
