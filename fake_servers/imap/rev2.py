"""IMAP4rev2 (RFC 9051) and UTF8=ACCEPT (RFC 6855): what changes in one session once the client enables them.

Why per session and opt-in: the server announces IMAP4rev1 and IMAP4rev2 side by side, and RFC 9051 (appendix
E) keeps rev1 semantics until the client sends `ENABLE IMAP4rev2`. A rev1 client must see exactly what it saw
before (every answer byte for byte), so each difference is a branch on a flag set here, in one place:

- `rev2` (ENABLE IMAP4rev2): SEARCH answers with ESEARCH (`RETURN (ALL)` implied, RFC 9051 6.4.4), SEARCHRES
  (`RETURN (SAVE)` and `$`, RFC 5182) is available, no `\\Recent` flag and no `* n RECENT` (the session claims no
  recent messages, so a rev1 session still gets them), SELECT/EXAMINE send the mailbox's `* LIST` line instead
  of `[UNSEEN n]`, STATUS takes DELETED, an extended LIST always reports children.
- `utf8_names` (IMAP4rev2 or UTF8=ACCEPT): mailbox names are UTF-8 both ways; modified UTF-7 is neither read
  nor written, so `&` is an ordinary character. A name that is not valid UTF-8 gets NO.
- `utf8_accept` (ENABLE UTF8=ACCEPT): APPEND takes `UTF8 (literal8)` (RFC 6855 4) and SEARCH refuses a CHARSET
  (RFC 6855 3: the client MUST NOT send one).

The session (session.py) asks these methods; the commands that differ call `wire_name`, `rev2_select_lines`
and the `saved_*` helpers.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..store.base import SEPARATOR, MailboxInfo
from .errors import ParseError
from .lexer import Lexer
from .listext import mailbox_wire
from .selected import SelectedMailbox
from .state import SessionCore

REV2 = "IMAP4REV2"
UTF8_ACCEPT = "UTF8=ACCEPT"
#: How ENABLED spells what it confirms (the announced spelling).
SPELLING = {REV2: "IMAP4rev2", UTF8_ACCEPT: "UTF8=ACCEPT"}


class Rev2Session(SessionCore):
    """A mixin of ImapSession: the rev2 / UTF8=ACCEPT flags and what depends on them."""

    rev2: bool = False
    utf8_accept: bool = False
    #: SEARCHRES: the UIDs the last `RETURN (SAVE)` kept (`$`); cleared when the selection changes.
    saved_uids: frozenset[int] = frozenset()

    @property
    def utf8_names(self) -> bool:
        return self.rev2 or self.utf8_accept

    def enable_rev2(self, name: str) -> bool:
        """ENABLE of IMAP4rev2 or UTF8=ACCEPT (upper case): True when it is one of them."""
        if name == REV2:
            self.rev2 = True
            if self.selected is not None:  # enabled while selected: no RECENT from now on
                self.selected.report_recent = False
            return True
        if name == UTF8_ACCEPT:
            self.utf8_accept = True
            return True
        return False

    def wire_name(self, name: str) -> bytes:
        """A mailbox name as this session writes it: UTF-8 once enabled, else modified UTF-7."""
        return mailbox_wire(name, self.utf8_names)

    # -- SELECT / EXAMINE ---------------------------------------------------------------------------------
    def rev2_select_list(self, info: MailboxInfo) -> str:
        """RFC 9051 6.3.2: SELECT/EXAMINE answer a `* LIST` line for the mailbox, its attributes accurate."""
        assert self.user is not None
        prefix = info.name + SEPARATOR
        children = any(b.name.startswith(prefix) for b in self.store.list_mailboxes(self.user))
        attrs = ["\\HasChildren" if children else "\\HasNoChildren"]
        if info.special_use:
            attrs.append(info.special_use)
        return f'* LIST ({" ".join(attrs)}) "/" {self.wire_name(info.name).decode("utf-8")}'

    # -- SEARCHRES (RFC 5182) -------------------------------------------------------------------------------
    def save_result(self, uids: Iterable[int]) -> None:
        self.saved_uids = frozenset(uids)

    def saved_indexes(self, sel: SelectedMailbox) -> list[int]:
        """0-based positions of the messages `$` names that are still in the client's view."""
        saved = self.saved_uids
        return [i for i, u in enumerate(sel.uids) if u in saved and u not in sel.gone]

    def forget_result(self) -> None:
        """A new selection (or none): `$` is empty (RFC 5182 2.1)."""
        self.saved_uids = frozenset()

    def dollar_allowed(self) -> None:
        if not self.rev2:
            raise ParseError("$ (SEARCHRES) needs ENABLE IMAP4rev2")


def parse_utf8_append(lx: Lexer) -> bytes:
    """`UTF8 (literal8)` after the word UTF8 (RFC 6855 4): the message octets."""
    lx.sp()
    lx.char(b"(")
    if lx.peek() != 0x7E:
        raise ParseError("UTF8 wants (~{n}...), a literal8")
    data = lx.literal8()
    lx.char(b")")
    return data
