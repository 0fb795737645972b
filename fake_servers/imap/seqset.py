"""Sequence sets (RFC 3501 sequence-set): parsing "1:4,7,9:*", testing membership, writing UID sets back.

Why ranges and not expanded sets: "1:*" over 10,000 messages, or a client's "1:4294967295", must cost nothing.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import ParseError

STAR = -1
_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class SequenceSet:
    ranges: tuple[tuple[int, int], ...]  # (low, high); STAR for "*"

    @classmethod
    def parse(cls, text: str) -> SequenceSet:
        if not text:
            raise ParseError("empty sequence set")
        ranges = []
        for piece in text.split(","):
            lo_s, sep, hi_s = piece.partition(":")
            lo = _number(lo_s)
            hi = _number(hi_s) if sep else lo
            ranges.append((lo, hi))
        return cls(tuple(ranges))

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Ranges with "*" replaced by `largest`, each ordered low..high."""
        out = []
        for lo, hi in self.ranges:
            lo = largest if lo == STAR else lo
            hi = largest if hi == STAR else hi
            if lo > hi:
                lo, hi = hi, lo
            out.append((lo, hi))
        return out

    def seqs(self, count: int) -> list[int]:
        """Sequence numbers (1-based) in the set, ascending, among 1..count; raises ParseError when a number
        is outside 1..count (RFC 3501: an invalid sequence number is BAD)."""
        picked: set[int] = set()
        for lo, hi in self.resolve(count):
            if lo < 1 or hi > count:
                raise ParseError("invalid message sequence number")
            picked.update(range(lo, hi + 1))
        return sorted(picked)

    def uid_indexes(self, uids: Sequence[int]) -> list[int]:
        """0-based indexes into the ascending `uids` of the UIDs in the set (unknown UIDs ignored)."""
        if not uids:
            return []
        largest = uids[-1]
        picked: set[int] = set()
        for lo, hi in self.resolve(largest):
            a = bisect.bisect_left(uids, lo)
            b = bisect.bisect_right(uids, hi)
            picked.update(range(a, b))
        return sorted(picked)

    def __str__(self) -> str:
        def one(v: int) -> str:
            return "*" if v == STAR else str(v)
        return ",".join(one(lo) if lo == hi else f"{one(lo)}:{one(hi)}" for lo, hi in self.ranges)


def _number(text: str) -> int:
    if text == "*":
        return STAR
    if not text.isdigit() or not text.isascii() or text.startswith("0"):
        raise ParseError(f"bad sequence set number {text[:20]!r}")
    value = int(text)
    if value > _MAX:
        raise ParseError("sequence number out of range")
    return value


def compress(numbers: Iterable[int]) -> str:
    """Ascending numbers -> "1:3,5,8:9" (RFC 4315 uid-set form)."""
    out: list[str] = []
    start = prev = None
    for n in sorted(set(numbers)):
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            out.append(str(start) if start == prev else f"{start}:{prev}")
            start = prev = n
    if start is not None:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)
