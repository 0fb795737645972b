"""The web client emulator: a static view, like Outlook on the web.

Why it behaves this way: a web page is rendered once and then just sits in the browser. Between page loads no
connection is open and nothing is pushed, so a message recalled on the server stays on the screen (in the list,
and as the rendered message if it was open) until the page is loaded again. The client never processes
recalls: the recall instruction is just one more message in the list.

State lives under `state_dir/<name>/`: `index.html` (the list as last rendered), one `<key>.html` per opened
message (key: a hash of the Message-ID) and `opened.json` (what the user has opened, kept across restarts).
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path

from recall_lab.harness.clients.cache import message_id_of, normalise_mid, search_quoted
from recall_lab.harness.clients.connection import ImapConnection, endpoint_of
from recall_lab.harness.clients.imap_parse import ParseError, parse_envelope
from recall_lab.harness.clients.preview import Preview, body_text, first_line, parse, preview_of


class MessageGone(LookupError):
    """The user clicked a message the server no longer has (Outlook on the web: "item not found")."""


@dataclass(frozen=True)
class ListEntry:
    uid: int
    message_id: str | None
    subject: str
    sender: str
    preview: str
    seen: bool


def snapshot_key(message_id: str) -> str:
    return hashlib.sha256(normalise_mid(message_id).encode()).hexdigest()[:24]


def render_message(raw: bytes) -> str:
    """A self-contained HTML page of one message; every header and body character escaped."""
    msg = parse(raw)

    def h(name: str) -> str:
        return html.escape(" ".join(str(msg.get(name, "")).split()))

    body = html.escape(body_text(msg))
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>" + h("Subject") + "</title></head>\n"
            "<body><article>\n"
            f"<h1>{h('Subject')}</h1>\n<p>From: {h('From')}<br>To: {h('To')}<br>Date: {h('Date')}<br>"
            f"Message-ID: {h('Message-ID')}</p>\n<pre>{body}</pre>\n</article></body></html>\n")


def render_list(folder: str, entries: list[ListEntry]) -> str:
    rows = "".join(
        f"<tr class=\"{'read' if e.seen else 'unread'}\"><td>{html.escape(e.sender)}</td>"
        f"<td>{html.escape(e.subject)}</td><td>{html.escape(e.preview)}</td></tr>\n"
        for e in entries
    )
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(folder) +
            "</title></head>\n<body><table>\n<tr><th>From</th><th>Subject</th><th>Preview</th></tr>\n" + rows +
            "</table></body></html>\n")


class WebClient:
    """A web mail view of one user's folder; see the module docstring and docs/clients.md."""

    def __init__(self, user: str, password: str, imap: object, state_dir: Path | str, *, folder: str = "INBOX",
                 name: str = "web", timeout: float = 10.0) -> None:
        self.user = user.strip().lower()
        self.password = password
        self.imap = imap
        self.folder = folder
        self.name = name
        self.timeout = timeout
        self.root = Path(state_dir) / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.listing: list[ListEntry] = []
        self.page_loads = 0
        self._opened: set[str] = set(self._load_opened())

    # --- state on disk ---------------------------------------------------------------------------------------

    def _load_opened(self) -> list[str]:
        try:
            return list(json.loads((self.root / "opened.json").read_text()))
        except (OSError, ValueError):
            return []

    def _save_opened(self) -> None:
        (self.root / "opened.json").write_text(json.dumps(sorted(self._opened)))

    def snapshot_path(self, message_id: str) -> Path:
        return self.root / f"{snapshot_key(message_id)}.html"

    def snapshot_visible(self, message_id: str) -> bool:
        return self.snapshot_path(message_id).exists()

    @property
    def index_path(self) -> Path:
        return self.root / "index.html"

    # --- what the page shows ---------------------------------------------------------------------------------

    def in_listing(self, message_id: str) -> bool:
        key = normalise_mid(message_id)
        return any(e.message_id and normalise_mid(e.message_id) == key for e in self.listing)

    def has_message_id(self, message_id: str) -> bool:
        """Visible on the page as last rendered: in the list, or as an opened message's snapshot."""
        return self.in_listing(message_id) or self.snapshot_visible(message_id)

    def preview(self, message_id: str) -> Preview | None:
        key = normalise_mid(message_id)
        for e in self.listing:
            if e.message_id and normalise_mid(e.message_id) == key:
                return Preview(e.subject, e.preview, e.sender)
        return None

    # --- the two things a browser does -----------------------------------------------------------------------

    async def _connect(self) -> ImapConnection:
        host, port = endpoint_of(self.imap)
        conn = ImapConnection(host, port, self.user, self.password, timeout=self.timeout)
        await conn.open()
        return conn

    async def page_load(self) -> list[ListEntry]:
        """Connect, list the folder, re-render the opened messages still there, drop the others, log out."""
        conn = await self._connect()
        try:
            info = await conn.select(self.folder)
            records = []
            if info.exists:
                records = await conn.uid_fetch("1:*", "(UID FLAGS ENVELOPE BODY.PEEK[HEADER] "
                                                      "BODY.PEEK[TEXT]<0.2048>)")
            entries: list[ListEntry] = []
            bodies_needed: dict[str, int] = {}
            for record in sorted(records, key=lambda r: r.uid or 0):
                if record.uid is None:
                    continue
                try:
                    env = parse_envelope(record.items.get("ENVELOPE"))
                except ParseError:
                    continue
                header = record.section("BODY[HEADER]") or b""
                text = record.section("BODY[TEXT]") or b""
                mid = env.message_id or message_id_of(header)
                subject, sender = env.subject, env.sender
                if header:
                    # the header literal is exact; aioimaplib strips every "* " from a response's first line,
                    # which can eat part of an ENVELOPE subject
                    shown = preview_of(header + text)
                    subject, sender, line = shown.subject or subject, shown.sender or sender, shown.first_line
                else:
                    line = first_line(text.decode("utf-8", "replace"))
                entries.append(ListEntry(record.uid, mid, subject, sender, line,
                                         "\\Seen" in (record.flags or frozenset())))
                if mid and normalise_mid(mid) in self._opened:
                    bodies_needed[normalise_mid(mid)] = record.uid
            bodies: dict[int, bytes] = {}
            if bodies_needed:
                uids = ",".join(str(u) for u in sorted(bodies_needed.values()))
                for record in await conn.uid_fetch(uids, "(UID BODY.PEEK[])"):
                    raw = record.section("BODY[]")
                    if record.uid is not None and raw is not None:
                        bodies[record.uid] = raw
        finally:
            await conn.logout()
        self.listing = entries
        self.page_loads += 1
        for key in list(self._opened):
            uid = bodies_needed.get(key)
            path = self.root / f"{snapshot_key(key)}.html"
            if uid is not None and uid in bodies:
                path.write_text(render_message(bodies[uid]), encoding="utf-8")
            else:
                path.unlink(missing_ok=True)  # gone from the server: gone from the page now
        self.index_path.write_text(render_list(self.folder, entries), encoding="utf-8")
        return entries

    async def open(self, message_id: str) -> Path:
        """The user clicks the message: FETCH BODY[] (sets \\Seen), render the snapshot, return its path."""
        conn = await self._connect()
        try:
            await conn.select(self.folder)
            key = normalise_mid(message_id)
            # the user clicks an item of the list as rendered: its UID; else the page searches for it
            uids = [e.uid for e in self.listing if e.message_id and normalise_mid(e.message_id) == key]
            if not uids:
                uids = await conn.uid_search("HEADER", "Message-ID", search_quoted(message_id))
            if not uids:
                raise MessageGone(f"{message_id} is no longer in {self.user}'s {self.folder}")
            records = await conn.uid_fetch(str(uids[0]), "(UID BODY[])")
        finally:
            await conn.logout()
        raw = next((r.section("BODY[]") for r in records if r.section("BODY[]") is not None), None)
        if raw is None:
            raise MessageGone(f"{message_id} vanished while it was being opened")
        key = normalise_mid(message_id)
        self._opened.add(key)
        self._save_opened()
        path = self.snapshot_path(message_id)
        path.write_text(render_message(raw), encoding="utf-8")
        self.listing = [ListEntry(e.uid, e.message_id, e.subject, e.sender, e.preview,
                                  e.seen or (e.message_id is not None and normalise_mid(e.message_id) == key))
                        for e in self.listing]
        return path

    async def move(self, message_id: str, folder: str) -> None:
        """Move a message (what a server-side rule or a drag in the page does); the page shows it at next load."""
        conn = await self._connect()
        try:
            await conn.select(self.folder)
            uids = await conn.uid_search("HEADER", "Message-ID", search_quoted(message_id))
            if not uids:
                raise MessageGone(f"{message_id} is no longer in {self.user}'s {self.folder}")
            await conn.uid_move(",".join(map(str, uids)), folder)
        finally:
            await conn.logout()
