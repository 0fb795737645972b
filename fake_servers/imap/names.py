"""Bounds on mailbox names, and LIST/LSUB pattern matching in time linear in the name.

Why bounds: a name is a client's to choose, and what it costs is not linear in its length. CREATE makes every
missing ancestor, so a 60 KB name of 30,000 one-letter levels made 30,000 ancestor names (~900 MB of strings)
and held the server for minutes; names also key caches and are matched against every LIST pattern. Limits in
the spirit of Dovecot's (its Maildir++ layout refuses a name over 255 octets, "[CANNOT] Mailbox name too
long"), but wider, since no file system is in the way: 1,024 characters in all, 255 per level, 32 levels.

Why not a regular expression for patterns: `*` as `.*` backtracks, and a pattern like `*a*a*a*a*a*a*a*b` against
a mailbox named `aaaa...` takes exponential time (seven `*a` took 0.3 s on a 40-character name, every extra one
five times longer): one LIST could hold the event loop for hours. `ListPattern` runs the pattern as a
bit-parallel automaton instead: one pass over the name, a few integer operations per character.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..store.base import SEPARATOR


@dataclass(frozen=True)
class MailboxNameLimits:
    max_length: int = 1024  # characters of the whole name (any command: no longer name can exist)
    max_level_length: int = 255  # characters between separators (CREATE and RENAME)
    max_levels: int = 32  # hierarchy levels (CREATE and RENAME)

    def length_problem(self, name: str) -> str | None:
        if len(name) > self.max_length:
            return f"Mailbox name too long (over {self.max_length} characters)"
        return None

    def create_problem(self, name: str) -> str | None:
        """Why a mailbox may not be given this (new) name, or None."""
        problem = self.length_problem(name)
        if problem:
            return problem
        levels = name.split(SEPARATOR)
        if len(levels) > self.max_levels:
            return f"Mailbox name has too many hierarchy levels (over {self.max_levels})"
        if any(len(level) > self.max_level_length for level in levels):
            return f"Mailbox name has a level over {self.max_level_length} characters"
        return None


class ListPattern:
    """A LIST/LSUB pattern: `*` matches any characters, `%` any but the hierarchy separator (RFC 3501 6.3.8)."""

    __slots__ = ("_exact", "_literals", "_masks", "_star", "_wild", "_accept")

    def __init__(self, pattern: str) -> None:
        tokens: list[str] = []
        for ch in pattern:
            if ch in "*%" and tokens and tokens[-1] in ("*", "%"):
                if ch == "*":  # a run of wildcards is one: `*` if any of them is
                    tokens[-1] = "*"
                continue
            tokens.append(ch)
        self._exact = pattern if "*" not in pattern and "%" not in pattern else None
        self._literals = sum(1 for t in tokens if t not in ("*", "%"))
        masks: dict[str, int] = {}
        star = percent = 0
        for i, token in enumerate(tokens):
            bit = 1 << i
            if token == "*":
                star |= bit
            elif token == "%":
                percent |= bit
            else:
                masks[token] = masks.get(token, 0) | bit
        self._masks = masks
        self._star = star
        self._wild = star | percent
        self._accept = 1 << len(tokens)

    def match(self, name: str) -> bool:
        if self._exact is not None:
            return name == self._exact
        if len(name) < self._literals:  # each literal character of the pattern takes one of the name's
            return False
        wild, star, masks = self._wild, self._star, self._masks
        # bit i set: the first i tokens can match what was read; a wildcard may also match nothing
        states = 1 | ((1 & wild) << 1)
        for ch in name:
            stay = star if ch == SEPARATOR else wild
            states = ((states & masks.get(ch, 0)) << 1) | (states & stay)
            if not states:
                return False
            states |= (states & wild) << 1
        return bool(states & self._accept)
