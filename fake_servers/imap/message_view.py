"""One message as IMAP FETCH and SEARCH see it: ENVELOPE, BODYSTRUCTURE, BODY[section], search text.

Why a view object: the IMAP server asks many questions of the same raw bytes (FETCH of a header, then a
SEARCH, then a BODYSTRUCTURE). MessageView parses lazily and remembers: the top header's extent is found
with two `bytes.find` calls (that is all `BODY.PEEK[HEADER]` of a whole mailbox needs); the MIME tree is
built only for part sections and BODYSTRUCTURE; text decoding only for SEARCH.

Sections are exact slices of the raw bytes (CRLF or LF kept as stored; only NUL goes out as 0x80, as in
Dovecot). ENVELOPE, BODYSTRUCTURE and the section rules match what Dovecot 2.3 answers for the same
message (tests/imap/test_message_view_dovecot.py checks that), except that sizes and line counts are those
of the stored bytes (Dovecot counts LF-only lines as if they ended in CRLF).
Values follow fake_servers/imap/values.py: None -> NIL, str -> string, bytes -> literal (used for
header bytes that are not UTF-8), lists -> parenthesised lists.
"""

from __future__ import annotations

import datetime
from email.utils import parsedate_to_datetime

from fake_servers.imap.mime_rfc822 import (
    Address,
    parse_addresses,
    parse_content_type,
    parse_disposition,
    parse_languages,
    parse_token_value,
)
from fake_servers.imap.mime_text import decode_body, decode_words, unfold
from fake_servers.imap.mime_tree import HeaderField, Part, header_fields, parse_message
from fake_servers.imap.values import ImapValue

__all__ = ["MessageView"]

_ENVELOPE_STRINGS = ("date", "subject", "in-reply-to", "message-id")
_ENVELOPE_ADDRESSES = ("from", "sender", "reply-to", "to", "cc", "bcc")


def _out(text: str) -> str | bytes:
    """A str for the value model, or the raw bytes when they were not valid UTF-8 (a literal)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _nolf(text: str) -> str | bytes:
    return _out(text.replace("\r", "").replace("\n", ""))


def _for_humans(text: str) -> str | bytes:
    """Dovecot's cleanup of subjects and display names: no CR/LF, NUL -> U+FFFD, blanks collapsed, trimmed."""
    text = text.replace("\r", "").replace("\n", "").replace("\x00", "\ufffd")
    if "\t" in text or "  " in text or text[:1] == " " or text[-1:] == " ":
        text = " ".join(w for w in text.replace("\t", " ").split(" ") if w)
    return _out(text)


class _PartData:
    """The Content-* facts of one part, as Dovecot keeps them (first occurrence of each header wins)."""

    __slots__ = ("type", "subtype", "params", "id", "description", "encoding", "disposition",
                 "disposition_params", "md5", "language", "location")

    def __init__(self) -> None:
        self.type: str | None = None
        self.subtype: str | None = None
        self.params: list[tuple[str, str]] = []
        self.id: str | None = None
        self.description: str | None = None
        self.encoding: str | None = None
        self.disposition: str | None = None
        self.disposition_params: list[tuple[str, str]] | None = None
        self.md5: str | None = None
        self.language: list[str] | None = None
        self.location: str | None = None


class MessageView:
    """Read-only IMAP views of one raw message. Cheap to create; everything is computed on first use."""

    __slots__ = ("raw", "_tree", "_top", "_top_fields", "_data_cache")

    def __init__(self, raw: bytes) -> None:
        self.raw = bytes(raw)
        self._tree: Part | None = None
        self._top: tuple[int, int] | None = None
        self._top_fields: list[HeaderField] | None = None
        self._data_cache: dict[int, _PartData] = {}

    # --- lazy structure -----------------------------------------------------------------------------
    def _top_header(self) -> tuple[int, int]:
        """(end of header bytes, start of body) of the whole message, without building the tree."""
        if self._top is None:
            raw = self.raw
            if raw.startswith(b"\n"):
                self._top = (0, 1)
            elif raw.startswith(b"\r\n"):
                self._top = (0, 2)
            else:
                a = raw.find(b"\n\n")
                b = raw.find(b"\n\r\n")
                if a < 0 and b < 0:
                    self._top = (len(raw), len(raw))
                elif b < 0 or (0 <= a < b):
                    self._top = (a + 1, a + 2)
                else:
                    self._top = (b + 1, b + 3)
        return self._top

    def _fields(self) -> list[HeaderField]:
        if self._top_fields is None:
            end, _ = self._top_header()
            self._top_fields = header_fields(self.raw, 0, end)
        return self._top_fields

    @property
    def tree(self) -> Part:
        if self._tree is None:
            self._tree = parse_message(self.raw)
        return self._tree

    def _part_fields(self, part: Part) -> list[HeaderField]:
        if part.fields is None:
            part.fields = header_fields(self.raw, part.start, part.header_end)
        return part.fields

    def _value(self, f: HeaderField) -> str:
        """A field's full value as Dovecot reads it: leading blanks skipped, line ends kept."""
        raw = self.raw
        start, end = f.value_start, f.end
        if end > start and raw[end - 1] == 10:
            end -= 1
            if end > start and raw[end - 1] == 13:
                end -= 1
        value = raw[start:end]
        stripped = value.lstrip(b" \t")
        if stripped[:1] in (b"\r", b"\n") or not stripped:
            # the first line is all blanks: Dovecot skips just one
            value = value[1:] if value[:1] in (b" ", b"\t") else value
        else:
            value = stripped
        return value.decode("utf-8", "surrogateescape")

    # --- ENVELOPE -----------------------------------------------------------------------------------
    def envelope(self) -> ImapValue:
        """RFC 3501 ENVELOPE of the whole message."""
        return self._envelope_of(self._fields())

    def _envelope_of(self, fields: list[HeaderField]) -> list[ImapValue]:
        strings: dict[str, str] = {}
        addrs: dict[str, list[Address]] = {}
        for f in fields:
            name = f.name
            if name in _ENVELOPE_STRINGS:
                strings[name] = self._value(f)
            elif name in _ENVELOPE_ADDRESSES:
                found = parse_addresses(self._value(f))
                if found:
                    addrs.setdefault(name, []).extend(found)

        def s(name: str) -> ImapValue:
            v = strings.get(name)
            return None if v is None else _nolf(v)

        def a(name: str, fallback: str | None = None) -> ImapValue:
            lst = addrs.get(name)
            if lst is None and fallback is not None:
                lst = addrs.get(fallback)
            if not lst:
                return None
            return [[None if x.name is None else _for_humans(x.name),
                     None if x.route is None else _out(x.route),
                     None if x.mailbox is None else _out(x.mailbox),
                     None if x.domain is None else _out(x.domain)] for x in lst]

        subject = strings.get("subject")
        return [
            s("date"),
            None if subject is None else _for_humans(subject),
            a("from"), a("sender", "from"), a("reply-to", "from"),
            a("to"), a("cc"), a("bcc"),
            s("in-reply-to"), s("message-id"),
        ]

    # --- BODYSTRUCTURE ------------------------------------------------------------------------------
    def _data(self, part: Part) -> _PartData:
        key = id(part)  # parts live as long as the tree, so their ids are stable keys
        d = self._data_cache.get(key)
        if d is not None:
            return d
        d = _PartData()
        if part.mime:
            for f in self._part_fields(part):
                name = f.name
                if not name.startswith("content-"):
                    continue
                sub = name[8:]
                if sub == "type" and d.type is None:
                    ct = parse_content_type(self._value(f))
                    d.type = ct.type
                    d.subtype = ct.subtype if ct.subtype is not None else ""
                    d.params = ct.params
                elif sub == "transfer-encoding" and d.encoding is None:
                    d.encoding = parse_token_value(self._value(f))
                elif sub == "id" and d.id is None:
                    d.id = self._value(f)
                elif sub == "description" and d.description is None:
                    d.description = self._value(f)
                elif sub == "md5" and d.md5 is None:
                    d.md5 = self._value(f)
                elif sub == "location" and d.location is None:
                    d.location = self._value(f)
                elif sub == "language" and d.language is None:
                    d.language = parse_languages(self._value(f))
                elif sub == "disposition" and d.disposition_params is None:
                    disp, params = parse_disposition(self._value(f))
                    d.disposition = disp
                    d.disposition_params = params or None
        self._data_cache[key] = d
        return d

    @staticmethod
    def _params(params: list[tuple[str, str]], default_charset: bool) -> ImapValue:
        if not params and not default_charset:
            return None
        out: list[ImapValue] = []
        seen_charset = False
        for k, v in params:
            if k.lower() == "charset":
                seen_charset = True
            out.append(_out(k))
            out.append(_out(v))
        if default_charset and not seen_charset:
            out += ["charset", "us-ascii"]
        return out

    def _ext_common(self, d: _PartData) -> list[ImapValue]:
        disp: ImapValue = None
        if d.disposition is not None:
            disp = [_out(d.disposition), self._params(d.disposition_params or [], False)]
        lang: ImapValue = None if d.language is None else [_out(x) for x in d.language]
        loc: ImapValue = None if d.location is None else _nolf(d.location)
        return [disp, lang, loc]

    def bodystructure(self, extended: bool = True) -> ImapValue:
        """RFC 3501 BODYSTRUCTURE (extended) or BODY (extended=False) of the whole message."""
        root = self.tree
        if root.kind == "leaf" and self._plain_7bit(self._data(root)):
            # Dovecot recognises a plain us-ascii 7bit message and answers its canonical form
            # (lowercase "7bit" and charset whatever case the header used)
            out: list[ImapValue] = ["text", "plain", ["charset", "us-ascii"], None, None, "7bit",
                                    root.end - root.body_start,
                                    self.raw.count(b"\n", root.body_start, root.end)]
            return out + [None, None, None, None] if extended else out
        return self._structure(root, extended)

    @staticmethod
    def _plain_7bit(d: _PartData) -> bool:
        if d.type is not None and (d.type.lower() != "text" or (d.subtype or "").lower() != "plain"):
            return False
        if len(d.params) > 1 or (d.params and (d.params[0][0].lower() != "charset"
                                               or d.params[0][1].lower() != "us-ascii")):
            return False
        if d.encoding is not None and d.encoding.lower() != "7bit":
            return False
        return (d.id is None and d.description is None and d.md5 is None and d.disposition is None
                and d.language is None and d.location is None)

    def _structure(self, part: Part, extended: bool) -> list[ImapValue]:
        raw = self.raw
        d = self._data(part)
        if part.kind == "multipart":
            out: list[ImapValue] = [self._structure(c, extended) for c in part.children]
            if not out:
                empty: list[ImapValue] = ["text", "plain", ["charset", "us-ascii"], None, None, "7bit", 0, 0]
                if extended:
                    empty += [None, None, None, None]
                out.append(empty)
            out.append(_out(d.subtype or ""))
            if extended:
                out.append(self._params(d.params, False))
                out += self._ext_common(d)
            return out
        if part.kind == "message":
            out = ["message", "rfc822"]
            text = False
        elif d.type is None:
            out = ["text", "plain"]
            text = True
        else:
            out = [_out(d.type), _out(d.subtype or "")]
            text = d.type.lower() == "text"
        out.append(self._params(d.params, text))
        out.append(None if d.id is None else _nolf(d.id))
        out.append(None if d.description is None else _nolf(d.description))
        out.append(_out(d.encoding) if d.encoding is not None else "7bit")
        out.append(part.end - part.body_start)
        if text:
            out.append(raw.count(b"\n", part.body_start, part.end))
        elif part.kind == "message":
            child = part.children[0]
            out.append(self._envelope_of(self._part_fields(child)))
            out.append(self._structure(child, extended))
            out.append(raw.count(b"\n", part.body_start, part.end))
        if extended:
            out.append(None if d.md5 is None else _nolf(d.md5))
            out += self._ext_common(d)
        return out

    # --- BODY[section] ------------------------------------------------------------------------------
    def _find(self, path: tuple[int, ...]) -> Part | None:
        """The part a section path names, by Dovecot's rules: a non-multipart part is its own "1"
        (so BODY[1] of a top-level message/rfc822 is the whole encapsulated message), a path may only
        go deeper through multiparts and message/rfc822 parts, and a message/rfc822 part reached by
        the path is entered before the next number is applied."""
        part: Part | None = self.tree
        last = len(path) - 1
        for i, num in enumerate(path):
            if part is None or num < 1:
                return None
            if i > 0 and part.kind == "message" and part.children:
                part = part.children[0]
            if part.kind == "multipart":
                part = part.children[num - 1] if num <= len(part.children) else None
            elif num != 1 or (i < last and part.kind != "message"):
                return None
        return part

    def section(self, part: tuple[int, ...], kind: str | None, fields: tuple[str, ...] = ()) -> bytes:
        """BODY[section] bytes (RFC 3501 6.4.5); b"" when the part does not exist.

        Exact slices of the stored message, except that NUL bytes come out as 0x80 (as Dovecot sends
        them: an IMAP literal may not carry NUL); lengths and offsets are unchanged."""
        out = self._section(part, kind, fields)
        if b"\x00" in out:
            out = out.replace(b"\x00", b"\x80")
        return out

    def _section(self, part: tuple[int, ...], kind: str | None, fields: tuple[str, ...]) -> bytes:
        raw = self.raw
        kind = kind.upper() if kind else None
        if not part:
            if kind is None:
                return raw
            if kind == "MIME":
                return b""
            end, body = self._top_header()
            if kind == "TEXT":
                return raw[body:]
            if kind == "HEADER":
                return raw[:body]
            return self._fields_section(self._fields(), raw[end:body], kind, fields)
        p = self._find(part)
        if p is None:
            return b""
        if kind is None:
            return raw[p.body_start:p.end]
        if kind == "MIME":
            return raw[p.start:p.body_start]
        # HEADER / TEXT / HEADER.FIELDS[.NOT] of an encapsulated message
        if p.kind != "message" or not p.children:
            return b""
        m = p.children[0]
        if kind == "TEXT":
            return raw[m.body_start:m.end]
        if kind == "HEADER":
            return raw[m.start:m.body_start]
        if m.cut_short:  # an attached message a boundary cut to nothing: Dovecot answers an empty header
            return b"\r\n"
        # an attached message's header without its empty line gets no CRLF added (as in Dovecot)
        terminator = b"\r\n" if m.header_end < m.body_start else b""
        return self._fields_section(self._part_fields(m), raw[m.header_end:m.body_start], kind, fields,
                                    terminator)

    def _fields_section(self, hdr: list[HeaderField], blank: bytes, kind: str, names: tuple[str, ...],
                        terminator: bytes = b"\r\n") -> bytes:
        """Matching (or non-matching) field lines exactly as stored, then the empty line. Like Dovecot,
        HEADER.FIELDS always ends with CRLF; HEADER.FIELDS.NOT passes on the header's own empty line
        (none if the header had none)."""
        wanted = {n.lower() for n in names}
        if kind == "HEADER.FIELDS":
            keep = [f for f in hdr if f.name in wanted]
        elif kind == "HEADER.FIELDS.NOT":
            keep = [f for f in hdr if f.name not in wanted]
        else:
            return b""
        raw = self.raw
        out = b"".join(raw[f.start:f.end] for f in keep)
        if out and not out.endswith(b"\n"):
            out += b"\r\n"
        if kind == "HEADER.FIELDS.NOT":
            return out + blank
        return out + terminator

    # --- SEARCH helpers -----------------------------------------------------------------------------
    def header_values(self, name: str) -> list[str]:
        """Decoded values of every `name` field of the top header, in order."""
        lname = name.lower()
        raw = self.raw
        return [decode_words(unfold(raw[f.value_start:f.end])) for f in self._fields() if f.name == lname]

    def header_text(self) -> str:
        """The whole top header, decoded, one field per line."""
        raw = self.raw
        lines = []
        for f in self._fields():
            lines.append(f"{raw[f.start:f.value_start].decode('utf-8', 'replace').rstrip(':')}: "
                         f"{decode_words(unfold(raw[f.value_start:f.end]))}")
        return "\n".join(lines)

    def body_text(self) -> str:
        """Decoded text of every text/* part (nested messages included), joined by newlines."""
        chunks: list[str] = []
        self._collect_text(self.tree, chunks)
        return "\n".join(chunks)

    def _collect_text(self, part: Part, chunks: list[str]) -> None:
        if part.kind == "multipart":
            for c in part.children:
                self._collect_text(c, chunks)
            return
        if part.kind == "message":
            for c in part.children:
                self._collect_text(c, chunks)
            return
        d = self._data(part)
        if d.type is not None and d.type.lower() != "text":
            return
        charset = next((v for k, v in d.params if k.lower() == "charset"), None)
        chunks.append(decode_body(self.raw[part.body_start:part.end], d.encoding, charset))

    def sent_date(self) -> datetime.date | None:
        """The Date: header's calendar date in its own timezone (SENTBEFORE/SENTON/SENTSINCE)."""
        values = [f for f in self._fields() if f.name == "date"]
        if not values:
            return None
        text = unfold(self.raw[values[-1].value_start:values[-1].end])
        try:
            return parsedate_to_datetime(text).date()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
