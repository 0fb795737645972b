"""The webmail's IMAP side: one short IMAP session per page, with the commands a web page needs.

Why one connection per request and not a pool: a static web page is exactly that (the browser asks, the server
answers, nothing stays open), every request is checked by a fresh IMAP LOGIN with the server's own throttling,
and a login whose password changed meanwhile fails at once. Listing reads with BODY.PEEK (nothing is marked
read); opening a message is a real `UID FETCH BODY[]`, so \\Seen is set by the IMAP server as for any client.
Every command has a timeout (`IMAP_TIMEOUT`) and every answer a size bound.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from recall_lab.harness.clients.cache import message_id_of, search_quoted
from recall_lab.harness.clients.connection import ImapClientError, ImapCommandError, ImapConnection
from recall_lab.harness.clients.imap_parse import FetchRecord
from recall_lab.harness.clients.preview import first_line, preview_of

#: Seconds one IMAP command may take before the page gives up (502/504 page, never a hang).
IMAP_TIMEOUT = 10.0
#: Messages per page of the list.
PAGE_SIZE = 50
#: Folders shown (with their unread counts).
MAX_FOLDERS = 100
#: Bytes of a message fetched to show it; a larger message is shown cut (the page says so).
MAX_FETCH = 2 * 1024 * 1024
#: Bytes of body text fetched for a list row's first line.
PREVIEW_BYTES = 2048


class LoginRefused(ImapClientError):
    """The IMAP server refused the address and password."""


class NotFound(LookupError):
    """No such folder or message (any more)."""


@dataclass(frozen=True)
class Folder:
    name: str
    unread: int


@dataclass(frozen=True)
class Row:
    """One line of the message list."""

    uid: int
    message_id: str
    sender: str
    subject: str
    preview: str
    seen: bool


@dataclass(frozen=True)
class ListPage:
    rows: list[Row]
    total: int
    page: int
    pages: int


@contextlib.asynccontextmanager
async def imap_session(host: str, port: int, user: str, password: str,
                       timeout: float = IMAP_TIMEOUT) -> AsyncIterator[ImapConnection]:
    """A logged-in connection, logged out afterwards. LoginRefused when the server says no; ImapClientError when
    it cannot be reached or does not answer."""
    conn = ImapConnection(host, port, user, password, timeout=timeout)
    try:
        await conn.open()
    except ImapClientError as exc:
        # ImapConnection.open chains transport failures; a refused LOGIN is raised without a cause
        if exc.__cause__ is None:
            raise LoginRefused(str(exc)) from None
        raise
    try:
        yield conn
    finally:
        await conn.logout()


async def select(conn: ImapConnection, folder: str) -> int:
    """SELECT the folder; NotFound when the server has no such (selectable) folder. Returns EXISTS."""
    try:
        return (await conn.select(folder)).exists
    except ImapCommandError as exc:
        raise NotFound(f"there is no folder named {folder!r}") from exc


async def folders(conn: ImapConnection) -> list[Folder]:
    """The user's folders (INBOX first) with their unread counts (SELECT + UID SEARCH UNSEEN each)."""
    names = (await conn.list_mailboxes())[:MAX_FOLDERS]
    names.sort(key=lambda n: (n.upper() != "INBOX", n.lower()))
    out = []
    for name in names:
        try:
            await conn.select(name)
            unread = len(await conn.uid_search("UNSEEN"))
        except ImapCommandError:
            continue
        out.append(Folder(name, unread))
    return out


def _row(record: FetchRecord) -> Row | None:
    if record.uid is None:
        return None
    head = record.section("BODY[HEADER]") or b""
    text = record.section("BODY[TEXT]") or b""
    shown = preview_of(head + text)
    line = shown.first_line or first_line(text.decode("utf-8", "replace"))
    return Row(record.uid, message_id_of(head) or "", shown.sender, shown.subject, line,
               "\\Seen" in (record.flags or frozenset()))


async def list_page(conn: ImapConnection, folder: str, page: int = 1, size: int = PAGE_SIZE) -> ListPage:
    """One page of the folder, newest (highest UID) first; nothing is marked read."""
    await select(conn, folder)
    uids = sorted(await conn.uid_search("ALL"), reverse=True)
    pages = max(1, -(-len(uids) // size))
    page = min(max(1, page), pages)
    chosen = uids[(page - 1) * size: page * size]
    rows: list[Row] = []
    if chosen:
        records = await conn.uid_fetch(",".join(map(str, chosen)),
                                       f"(UID FLAGS BODY.PEEK[HEADER] BODY.PEEK[TEXT]<0.{PREVIEW_BYTES}>)")
        by_uid = {row.uid: row for row in map(_row, records) if row is not None}
        rows = [by_uid[uid] for uid in chosen if uid in by_uid]
    return ListPage(rows, len(uids), page, pages)


async def find_uid(conn: ImapConnection, message_id: str) -> int | None:
    """The selected folder's (newest) UID of the message with this Message-ID."""
    uids = await conn.uid_search("HEADER", "Message-ID", search_quoted(message_id))
    return max(uids) if uids else None


async def message_uid(conn: ImapConnection, folder: str, uid: int | None, message_id: str) -> int:
    """The UID a page's request names: its `uid`, or else the folder's message with `message_id` (NotFound)."""
    if uid is not None:
        return uid
    await select(conn, folder)
    found = await find_uid(conn, message_id)
    if found is None:
        raise NotFound(message_id)
    return found


async def open_message(conn: ImapConnection, folder: str, uid: int) -> tuple[bytes, bool]:
    """`UID FETCH uid BODY[]` (sets \\Seen, as any client's does): (bytes, cut). NotFound when it is gone."""
    await select(conn, folder)
    sized = await conn.uid_fetch(str(uid), "(UID RFC822.SIZE)")
    record = next((r for r in sized if r.uid == uid), None)
    if record is None:
        raise NotFound(f"message {uid} is not in {folder}")
    size_value = record.items.get("RFC822.SIZE")
    size = int(size_value) if isinstance(size_value, bytes) and size_value.isdigit() else 0
    cut = size > MAX_FETCH
    item = f"BODY[]<0.{MAX_FETCH}>" if cut else "BODY[]"
    records = await conn.uid_fetch(str(uid), f"(UID {item})")
    raw = next((r.section("BODY[]") for r in records if r.uid == uid and r.section("BODY[]") is not None), None)
    if raw is None:
        raise NotFound(f"message {uid} left {folder} while it was being opened")
    return raw, cut


async def move(conn: ImapConnection, folder: str, uid: int, target: str) -> None:
    """UID MOVE (or COPY + expunge); NotFound when the message is gone, ImapCommandError when refused."""
    await select(conn, folder)
    if not await conn.uid_search("UID", str(uid)):
        raise NotFound(f"message {uid} is not in {folder}")
    await conn.uid_move(str(uid), target)
