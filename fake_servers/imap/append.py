"""APPEND, with MULTIAPPEND (RFC 3502), CATENATE (RFC 4469) and literal8 messages (RFC 3516).

A mixin of ImapSession (session.py). Grammar handled (RFC 3501 9, as the extensions widen it):

    append         = "APPEND" SP mailbox 1*(SP append-message)
    append-message = [flag-list SP] [date-time SP] append-data
    append-data    = literal / literal8 / "CATENATE" SP "(" cat-part *(SP cat-part) ")"
    cat-part       = "TEXT" SP (literal / literal8) / "URL" SP astring

Why all or nothing: a MULTIAPPEND is one command (RFC 3502 3: if any message cannot be appended, none is).
Every message is assembled (CATENATE URLs resolved) and checked against the MIME limits first, in bounded
steps; only then are they appended, one store call each with no step in between, so no other command sees a
half-done MULTIAPPEND; a store failure part-way takes the ones already appended back. One APPENDUID names them
all (a UID set).

What a client can make it spend, and the bounds: MAX_MESSAGES messages and MAX_CAT_PARTS parts per message
(NO [LIMIT] past them); a message, however assembled, at most the server's literal limit, and the whole command
no more through URLs than that limit either (NO [TOOBIG]): URLs cannot multiply a stored message past what one
literal could bring.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime

from ..mime_limits import check_steps
from ..recall.format import strip_verified
from ..store.base import NoSuchMailbox, NoSuchMessage, StoreError
from .binary import encode_binary_parts
from .catenate import bad_url, parse_url
from .errors import CommandFailed, ParseError
from .lexer import Lexer
from .mailbox_commands import parse_date_time
from .mime.view import MessageView
from .rev2 import parse_utf8_append
from .seqset import compress
from .state import SessionCore

#: Most messages one MULTIAPPEND may carry, and most parts one CATENATE may join.
MAX_MESSAGES = 1000
MAX_CAT_PARTS = 256
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


@dataclass(slots=True)
class _Text:
    data: bytes
    binary: bool  # sent as a literal8


@dataclass(slots=True)
class _Url:
    url: str


@dataclass(slots=True)
class _Message:
    flags: list[str]
    when: datetime | None
    parts: list[_Text | _Url] = field(default_factory=list)

    @property
    def binary(self) -> bool:
        return any(isinstance(p, _Text) and p.binary for p in self.parts)


class AppendCommands(SessionCore):
    def cmd_append(self, tag: str, lx: Lexer) -> Iterator[None]:
        lx.sp()
        name = lx.mailbox()
        messages: list[_Message] = []
        while True:
            if len(messages) >= MAX_MESSAGES:
                raise CommandFailed(f"More than {MAX_MESSAGES} messages in one APPEND", "LIMIT")
            lx.sp()
            messages.append(self._append_message(lx))
            if lx.at_end():
                break
        return self._append_steps(tag, name, messages)

    def _append_message(self, lx: Lexer) -> _Message:
        flags: list[str] = []
        when = None
        if lx.peek() == 0x28:
            flags = [f for f in lx.paren_list(lx.flag) if f not in ("\\Recent", "\\*")]
            lx.sp()
        if lx.peek() == 0x22:
            when = parse_date_time(lx.quoted().decode("ascii", "replace"))
            lx.sp()
        msg = _Message(flags, when)
        c = lx.peek()
        if c == 0x7B:
            msg.parts.append(_Text(lx.literal(), False))
        elif c == 0x7E:
            msg.parts.append(_Text(lx.literal8(), True))
        elif c is not None and (word := lx.atom("APPEND data").upper()) == "CATENATE":
            lx.sp()
            lx.paren_list(lambda: self._cat_part(lx, msg))
            if not msg.parts:
                raise ParseError("CATENATE needs at least one part")
        elif c is not None and word == "UTF8" and self.utf8_accept:  # type: ignore[attr-defined]
            msg.parts.append(_Text(parse_utf8_append(lx), True))  # RFC 6855 4 (rev2.py)
        else:
            raise ParseError("APPEND wants the message as a literal or CATENATE (...)")
        return msg

    @staticmethod
    def _cat_part(lx: Lexer, msg: _Message) -> None:
        if len(msg.parts) >= MAX_CAT_PARTS:
            raise CommandFailed(f"More than {MAX_CAT_PARTS} CATENATE parts", "LIMIT")
        kind = lx.atom("CATENATE part").upper()
        lx.sp()
        if kind == "TEXT":
            if lx.peek() == 0x7E:
                msg.parts.append(_Text(lx.literal8(), True))
            elif lx.peek() == 0x7B:
                msg.parts.append(_Text(lx.literal(), False))
            else:
                raise ParseError("CATENATE TEXT wants a literal")
        elif kind == "URL":
            msg.parts.append(_Url(lx.astring()))
        else:
            raise ParseError(f"unknown CATENATE part {kind[:20]}")

    def _append_steps(self, tag: str, name: str, messages: list[_Message]) -> Iterator[None]:
        """Assemble and check every message (steps), then append them all at once, or none."""
        try:
            info = self.store.mailbox(self.user, name)
        except NoSuchMailbox:
            raise CommandFailed(f"Mailbox doesn't exist: {name}", "TRYCREATE") from None
        budget = [self.config.max_literal]  # octets the whole command may read through URLs
        ready: list[tuple[bytes, _Message]] = []
        for msg in messages:
            raw = yield from self._assemble(msg, budget)
            if msg.binary:
                view = MessageView(raw, self.cache.limits)
                yield from view.prepare(("TREE",))
                raw = encode_binary_parts(raw, view)
                del view
            # The structure SMTP refuses at DATA, APPEND refuses too (NO [LIMIT]). Line length is not checked:
            # clients APPEND drafts and old mail whose lines are longer than RFC 5322 allows, and Dovecot
            # stores them.
            limits = replace(self.cache.limits, max_line_length=max(len(raw), 1))
            violation = yield from check_steps(raw, limits)
            if violation is not None:
                self._write(f"{tag} {violation.imap_reply}\r\n".encode())
                return
            # The trust mark vouches for a delivery by this server's submission; an APPEND is not one.
            ready.append((strip_verified(raw), msg))
        uids: list[int] = []
        done = False
        try:
            for raw, msg in ready:
                uids.append(self.store.append(self.user, info.name, raw, msg.flags, msg.when, origin=self).uid)
            done = True
        finally:
            if not done and uids:
                self._take_back_appended(info.name, uids)
        self.ok(tag, f"[APPENDUID {info.uidvalidity} {compress(uids)}] Append completed.")

    def _take_back_appended(self, mailbox: str, uids: list[int]) -> None:
        try:
            self.store.expunge(self.user, mailbox, uids, origin=self)
        except StoreError:  # the mailbox went away meanwhile: nothing left to take back
            pass

    def _assemble(self, msg: _Message, budget: list[int]) -> Generator[None, None, bytes]:
        """The message's octets: its literal, or its CATENATE parts joined (URLs resolved, a step each)."""
        limit = self.config.max_literal
        if len(msg.parts) == 1 and isinstance(msg.parts[0], _Text):
            return msg.parts[0].data
        out = bytearray()
        for part in msg.parts:
            if isinstance(part, _Text):
                piece = part.data  # already in memory: the framer bounded it
            else:
                piece = yield from self._resolve_url(part.url)
                yield
                if len(piece) > budget[0]:
                    raise CommandFailed(f"URLs of one APPEND name more than {limit} octets", "TOOBIG")
                budget[0] -= len(piece)
            if len(out) + len(piece) > limit:
                raise CommandFailed(f"CATENATE result larger than {limit} octets", "TOOBIG")
            out += piece
        return bytes(out)

    def _resolve_url(self, text: str) -> Generator[None, None, bytes]:
        """What a CATENATE URL names, read with this session's rights: only the user's own messages."""
        url = parse_url(text)
        if url.host is not None:
            if url.user is None or self.accounts.canonical(url.user) != self.user:
                raise bad_url(text, "URL names another user's mailbox")
            host = url.host.rsplit(":", 1)[0] if not url.host.endswith("]") else url.host
            name = self.config.name.lower()
            if host not in _LOCAL_HOSTS and host != name and not host.endswith("." + name):
                raise bad_url(text, "URL names another server")
        try:
            info = self.store.mailbox(self.user, url.mailbox)
        except NoSuchMailbox:
            raise bad_url(text, "URL names no mailbox of yours") from None
        if url.uidvalidity is not None and url.uidvalidity != info.uidvalidity:
            raise bad_url(text, "URL's UIDVALIDITY does not match the mailbox")
        key = (self.user, info.name, info.uidvalidity, url.uid)
        try:
            view = self.cache.get(key, lambda: self.store.fetch_raw(self.user, info.name, url.uid))
        except NoSuchMessage:
            raise bad_url(text, "URL names no message") from None
        section = url.section
        if section is None:
            data = view.raw
        else:
            if section.part:
                if self.rev2:  # type: ignore[attr-defined]  # a message/global part is entered (rev2.py)
                    view = yield from view.rev2_steps()
                yield from view.prepare(("TREE",))
            data = view.section(section.part, section.kind, section.fields)
        if url.offset is not None:
            end = None if url.length is None else url.offset + url.length
            data = data[url.offset:end]
        return bytes(data)


__all__ = ["AppendCommands", "MAX_CAT_PARTS", "MAX_MESSAGES"]
