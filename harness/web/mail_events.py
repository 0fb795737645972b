"""The live view's push channel: one IMAP connection in IDLE per open page, forwarded as server-sent events.

Why IDLE and not the store's own events: the live page stands for a web client that keeps a connection to its
mail server (Gmail's or Outlook's live web views). Going through IMAP, it sees exactly what such a client sees
(EXPUNGE or VANISHED the moment a recall removes a message, EXISTS for new mail, FETCH for flag changes), and it
works the same when a domain's IMAP server is another program.

Events sent (`event:` name, JSON `data:`):
- `ready` {"uids": "1:4,7"}: the folder's UIDs once selected (again after every reconnect, so the page can
  drop what vanished while it was not listening);
- `vanished` {"uids": [...], "message_ids": [...]}: messages gone from the folder (expunged, moved, recalled);
- `new` {"uids": [...], "message_ids": [...]}: messages arrived;
- `flags` {"uid", "seen", "flags", "message_id"}: flags changed (read elsewhere, for instance);
- `resync` {}: the server removed a message the stream could not name (the page reloads its list);
- `lost` {}: the IMAP connection ended; the browser reconnects (`retry:` says how soon).
Comments (`: keepalive`) go out every `KEEPALIVE` seconds so a dead browser is noticed.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from recall_lab.harness.clients.cache import message_id_of
from recall_lab.harness.clients.connection import ImapClientError, ImapConnection
from recall_lab.harness.clients.imap_parse import compress_uids, parse_untagged

#: Seconds between keepalive comments.
KEEPALIVE = 15.0
#: Seconds in one IDLE before it is renewed (RFC 2177: well under the server's 30-minute timeout).
IDLE_RENEW = 600.0
#: Newest messages whose Message-IDs the stream learns when it starts (to name them in events).
NAMED_AT_START = 200
#: Milliseconds the browser waits before reconnecting.
RETRY_MS = 1000


class MailStream:
    """One page's stream; `run` returns when the browser goes away, the IMAP connection ends, or the web server
    shuts down (`closing` is set)."""

    def __init__(self, host: str, port: int, user: str, password: str, folder: str, *, timeout: float,
                 closing: asyncio.Event) -> None:
        self.folder = folder
        self.closing = closing
        self.conn = ImapConnection(host, port, user, password, on_untagged=self._tap, on_lost=self._lost,
                                   timeout=timeout)
        self.seqmap: list[int | None] = []
        self.names: dict[int, str] = {}
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self.need_fetch = False
        self.lost = False
        self.wake = asyncio.Event()

    # --- the tap: every untagged line, in wire order ----------------------------------------------------

    def _tap(self, line: bytes) -> None:
        info = parse_untagged(line)
        if info.kind == "exists":
            if info.number > len(self.seqmap):
                self.seqmap.extend([None] * (info.number - len(self.seqmap)))
                self.need_fetch = True
                self.wake.set()
        elif info.kind == "expunge":
            index = info.number - 1
            if 0 <= index < len(self.seqmap):
                uid = self.seqmap.pop(index)
                if uid is None:
                    self._push("resync", {})
                else:
                    self._push("vanished", self._named([uid]))
        elif info.kind == "vanished" and not info.earlier:
            gone = set(info.uids)
            self.seqmap = [u for u in self.seqmap if u not in gone]
            self._push("vanished", self._named(sorted(gone)))
        elif info.kind == "fetch" and info.flags is not None:
            index = info.number - 1
            uid = info.uid
            if uid is None and 0 <= index < len(self.seqmap):
                uid = self.seqmap[index]
            if uid is not None:
                self._push("flags", {"uid": uid, "seen": "\\Seen" in info.flags, "flags": sorted(info.flags),
                                     "message_id": self.names.get(uid)})

    def _named(self, uids: list[int]) -> dict[str, Any]:
        return {"uids": uids, "message_ids": [self.names.pop(u, None) for u in uids]}

    def _lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.wake.set()

    def _push(self, event: str, data: dict[str, Any]) -> None:
        self.pending.append((event, data))
        self.wake.set()

    # --- IMAP steps ---------------------------------------------------------------------------------------

    async def _learn(self, uid_range: str) -> list[int]:
        """UIDs, sequence numbers and Message-IDs of the given range (header only, nothing marked read)."""
        records = await self.conn.uid_fetch(uid_range, "(UID BODY.PEEK[HEADER])")
        learned = []
        for record in records:
            if record.uid is None:
                continue
            index = record.seq - 1
            if index >= len(self.seqmap):
                self.seqmap.extend([None] * (index + 1 - len(self.seqmap)))
            if index >= 0:
                self.seqmap[index] = record.uid
            head = record.section("BODY[HEADER]")
            mid = message_id_of(head) if head else None
            if mid:
                self.names[record.uid] = mid
            learned.append(record.uid)
        return learned

    async def _start(self) -> list[int]:
        await self.conn.open()
        if self.conn.has("QRESYNC"):
            await self.conn.enable("QRESYNC")  # removals then come as VANISHED, with UIDs
        await self.conn.select(self.folder)
        uids = await self.conn.uid_search("ALL")
        self.seqmap = list(uids)
        if uids:
            await self._learn(",".join(map(str, uids[-NAMED_AT_START:])))
        return uids

    async def _fetch_new(self) -> None:
        self.need_fetch = False
        known = [u for u in self.seqmap if u is not None]
        await self.conn.ensure_not_idle()
        learned = await self._learn(f"{(max(known) if known else 0) + 1}:*")
        fresh = [u for u in learned if u not in known]
        if fresh:
            self._push("new", {"uids": fresh, "message_ids": [self.names.get(u) for u in fresh]})

    # --- the stream ------------------------------------------------------------------------------------------

    @staticmethod
    def _frame(event: str, data: dict[str, Any]) -> bytes:
        return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    async def run(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Opens IMAP (errors raise before anything is sent: LoginRefused/ImapClientError), then streams."""
        try:
            uids = await self._start()
        except BaseException:
            self.conn.abort()
            raise
        try:
            await response.prepare(request)
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            await response.write(self._frame("ready", {"uids": compress_uids(uids) if uids else ""}))
            await self.conn.idle_start()
            idle_since = time.monotonic()
            while not self.closing.is_set():
                if not self.wake.is_set() and not self.pending:
                    waiter = asyncio.ensure_future(self.wake.wait())
                    closer = asyncio.ensure_future(self.closing.wait())
                    try:
                        done, _ = await asyncio.wait({waiter, closer}, timeout=KEEPALIVE,
                                                     return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                        closer.cancel()
                    if not done:
                        await response.write(b": keepalive\n\n")
                self.wake.clear()
                if self.lost:
                    await response.write(self._frame("lost", {}))
                    break
                if self.need_fetch:
                    await self._fetch_new()
                    await self.conn.idle_start()
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > IDLE_RENEW:
                    await self.conn.ensure_not_idle()
                    await self.conn.idle_start()
                    idle_since = time.monotonic()
                pending, self.pending = self.pending, []
                for event, data in pending:
                    await response.write(self._frame(event, data))
        except (ConnectionError, ImapClientError):
            pass  # the browser left, or the IMAP server went away: the browser reconnects when it can
        finally:
            # dropped, not logged out: a LOGOUT out of IDLE could wait on a server that is going away, and this
            # also runs when the task is cancelled
            self.conn.abort()
        return response
