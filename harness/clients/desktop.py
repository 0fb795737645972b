"""The desktop client emulator: cached mode, like Outlook for Windows.

Why it behaves this way: a cached-mode client keeps a local copy of the mailbox and shows that copy. Whether a
recalled message disappears from the recipient's screen depends on the client hearing of the expunge: at once
over a persistent IDLE connection while online, or at the next resync (QRESYNC, CONDSTORE or a UID comparison)
after an offline period. In the legacy recall mode the client itself carries the recall out when the recall
instruction arrives, and only if the original is unread and in the same folder (`legacy_recall.decide`).

One connection per mirrored folder (as Outlook opens several), each in IDLE between commands. Every untagged
line reaches `_FolderMirror._on_untagged` in wire order (see `connection.py`), which keeps the
sequence-number-to-UID map and applies EXPUNGE / VANISHED / flag pushes to the cache immediately.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recall_lab.harness.clients.cache import (
    CachedMessage,
    FolderState,
    MessageCache,
    SqliteMessageCache,
    message_id_of,
    search_quoted,
)
from recall_lab.harness.clients.connection import ImapClientError, ImapConnection, endpoint_of
from recall_lab.harness.clients.imap_parse import compress_uids, parse_untagged
from recall_lab.harness.clients.preview import Preview, preview_of
from recall_lab.harness.own_name import client_name

log = logging.getLogger(__name__)

ResyncMethod = Literal["auto", "qresync", "condstore", "uids"]

#: Without IDLE the client polls with NOOP this often (seconds); real clients poll every few minutes.
POLL_INTERVAL = 0.5
#: How many pushed lines `DesktopClient.wire` keeps.
WIRE_LINES = 200


@dataclass(frozen=True)
class ClientEvent:
    """Something the client observed or did; `at` is time.monotonic() when it happened."""

    kind: str
    folder: str
    data: Any = None
    at: float = field(default_factory=time.monotonic, compare=False)


@dataclass(frozen=True)
class LocalNotice:
    """What the client told its user (not mail: a banner in the client)."""

    kind: str  # "recalled" (the sender recalled a message) | "recall-failed" (both kept; the user is told)
    message_id: str
    text: str


@dataclass(frozen=True)
class OfflinePeriod:
    """The client is offline from `start` to `end` seconds after its schedule begins (`math.inf`: for good)."""

    start: float
    end: float = math.inf

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"an offline period needs 0 <= start <= end, not {self.start}..{self.end}")


def offline_at(periods: Sequence[OfflinePeriod], t: float) -> bool:
    """Whether a schedule has the client offline at time `t` (simulated-time engines ask this)."""
    return any(p.start <= t < p.end for p in periods)


class _Changes:
    """A version counter with a way to await the next change (for wait_for without sleeping)."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def next(self) -> None:
        await self._event.wait()


class _FolderMirror:
    """One folder mirrored over one connection (IDLE between commands)."""

    def __init__(self, client: DesktopClient, folder: str) -> None:
        self.client = client
        self.folder = folder
        self.conn: ImapConnection | None = None
        self.seqmap: list[int | None] = []
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.need_fetch = False
        self.task: asyncio.Task | None = None
        self.online = False
        self._collect_dropped: list[int] | None = None

    # --- the tap: runs inside data_received, in wire order --------------------------------------------------

    def _on_untagged(self, line: bytes) -> None:
        info = parse_untagged(line)
        client = self.client
        if info.kind in ("exists", "expunge", "vanished", "fetch"):
            client.wire.append((self.folder, line))
        if info.kind == "exists":
            if info.number > len(self.seqmap):
                self.seqmap.extend([None] * (info.number - len(self.seqmap)))
                self.need_fetch = True
                self.wake.set()
            client._record("exists", self.folder, info.number)
        elif info.kind == "expunge":
            index = info.number - 1
            if 0 <= index < len(self.seqmap):
                uid = self.seqmap.pop(index)
                if uid is not None:
                    self._drop(uid)
                    client._record("expunge", self.folder, uid)
        elif info.kind == "vanished":
            gone = set(info.uids)
            self.seqmap = [u for u in self.seqmap if u not in gone]
            dropped = [uid for uid in info.uids if self._drop(uid)]
            if self._collect_dropped is not None:
                self._collect_dropped.extend(dropped)
            client._record("vanished", self.folder, {"uids": info.uids, "earlier": info.earlier,
                                                     "dropped": tuple(dropped)})
        elif info.kind == "fetch":
            uid = info.uid
            index = info.number - 1
            if index >= len(self.seqmap):
                self.seqmap.extend([None] * (index + 1 - len(self.seqmap)))
            if uid is not None and index >= 0:
                self.seqmap[index] = uid
            elif index >= 0:
                uid = self.seqmap[index]
            if uid is not None and info.flags is not None and client.cache.set_flags(self.folder, uid, info.flags):
                client._record("flags", self.folder, (uid, info.flags))

    def _drop(self, uid: int) -> bool:
        removed = self.client.cache.remove(self.folder, uid)
        if removed:
            self.client._changes.bump()
        return removed

    def _on_lost(self, exc: Exception | None) -> None:
        if self.online:
            self.online = False
            self.client._record("disconnected", self.folder, str(exc) if exc else "closed by the server")
            self.wake.set()

    # --- connect and resync ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        client = self.client
        host, port = endpoint_of(client.imap)
        conn = ImapConnection(host, port, client.user, client.password, on_untagged=self._on_untagged,
                              on_lost=self._on_lost, timeout=client.timeout)
        self.seqmap = []
        self.need_fetch = False
        await conn.open()
        self.conn = conn
        self.online = True
        try:
            await self._select_and_resync()
        except BaseException:
            self.online = False
            conn.abort()
            raise
        self.need_fetch = True
        self.wake.set()
        self.task = asyncio.create_task(self._loop(), name=f"desktop {client.user} {self.folder}")

    async def _select_and_resync(self) -> None:
        client, conn = self.client, self.conn
        assert conn is not None
        state = client.cache.state(self.folder)
        known = client.cache.uids(self.folder)
        method = client.resync
        if method == "auto":
            if conn.has("QRESYNC") and state.uidvalidity and state.highestmodseq:
                method = "qresync"
            elif conn.has("CONDSTORE") and state.uidvalidity and state.highestmodseq:
                method = "condstore"
            else:
                method = "uids"
        if method == "qresync" and not conn.has("QRESYNC"):
            raise ImapClientError("the server has no QRESYNC")
        if method == "condstore" and not conn.has("CONDSTORE"):
            raise ImapClientError("the server has no CONDSTORE")
        if conn.has("QRESYNC") and conn.has("ENABLE"):
            await conn.enable("QRESYNC")  # also makes EXPUNGE pushes VANISHED and FETCH pushes carry UID
        self._collect_dropped = []
        resyncing = bool(state.uidvalidity)
        if method == "qresync" and resyncing:
            info = await conn.select(self.folder, qresync=(state.uidvalidity, state.highestmodseq,
                                                           compress_uids(known)))
        else:
            info = await conn.select(self.folder, condstore=conn.has("CONDSTORE") and not conn.has("QRESYNC"))
        dropped = self._collect_dropped
        self._collect_dropped = None
        if state.uidvalidity and info.uidvalidity != state.uidvalidity:
            # UIDVALIDITY changed: every cached UID is meaningless now (RFC 3501 2.3.1.1)
            dropped.extend(client.cache.clear_folder(self.folder))
            resyncing = False
        server_uids = await conn.uid_search("ALL")
        self.seqmap = sorted(server_uids)
        present = set(server_uids)
        missing = [uid for uid in client.cache.uids(self.folder) if uid not in present]
        for uid in missing:
            self._drop(uid)
        if method == "qresync" and resyncing:
            # QRESYNC told us (VANISHED (EARLIER)); a UID the comparison still finds gone is a server bug
            if missing:
                client._record("resync-mismatch", self.folder, tuple(missing))
        else:
            dropped.extend(missing)
        if resyncing and method in ("condstore", "uids") and known:
            changed = state.highestmodseq if method == "condstore" else None
            records = await conn.uid_fetch(compress_uids(known), "(UID FLAGS)", changedsince=changed)
            for record in records:
                if record.uid is not None and record.flags is not None:
                    client.cache.set_flags(self.folder, record.uid, record.flags)
        client.cache.save_state(self.folder, FolderState(info.uidvalidity, info.highestmodseq or 0))
        if resyncing:
            client._record("resync", self.folder, {"method": method, "dropped": tuple(sorted(set(dropped)))})

    # --- the worker: fetch what is new, then IDLE until the next push ---------------------------------------

    async def _loop(self) -> None:
        conn = self.conn
        assert conn is not None
        try:
            while self.online:
                async with self.lock:
                    if not self.online:
                        break
                    await conn.ensure_not_idle()
                    self.wake.clear()
                    await self._process_pending()
                    if not self.wake.is_set() and conn.has("IDLE"):
                        await conn.idle_start()
                if conn.has("IDLE"):
                    await self.wake.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), POLL_INTERVAL)
                    async with self.lock:
                        if self.online:
                            await conn.noop()
        except ImapClientError as exc:
            if self.online:
                self.online = False
                self.client._record("disconnected", self.folder, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: report it as an event rather than dying silently
            log.exception("desktop client %s: folder %s failed", self.client.user, self.folder)
            self.online = False
            self.client._record("error", self.folder, repr(exc))

    async def _process_pending(self) -> None:
        if not self.need_fetch:
            return
        self.need_fetch = False
        await self._fetch_new()

    async def _fetch_new(self) -> None:
        client, conn = self.client, self.conn
        assert conn is not None
        cached = set(client.cache.uids(self.folder))
        known = [u for u in self.seqmap if u is not None]
        top = max([*known, *cached, 0])
        if None in self.seqmap or not known:
            await conn.uid_fetch(f"{top + 1}:*", "(UID FLAGS)")  # the tap fills the sequence map
        wanted = [u for u in self.seqmap if u is not None and u not in cached]
        if not wanted:
            return
        records = await conn.uid_fetch(compress_uids(wanted), "(UID FLAGS BODY.PEEK[])")
        new: list[CachedMessage] = []
        for record in sorted(records, key=lambda r: r.uid or 0):
            raw = record.section("BODY[]")
            if record.uid is None or raw is None or record.uid not in set(self.seqmap):
                continue  # expunged in between
            message = CachedMessage(self.folder, record.uid, raw, record.flags or frozenset(), message_id_of(raw))
            client.cache.put(message)
            client._record("fetched", self.folder, record.uid)
            new.append(message)
        for message in new:
            if client.process_recalls_on_arrival:
                await client._maybe_process_recall(self, message)

    async def settle(self) -> None:
        async with self.lock:
            if not self.online or self.conn is None:
                return
            await self.conn.ensure_not_idle()
            await self.conn.noop()
            await self._process_pending()
        self.wake.set()

    @contextlib.asynccontextmanager
    async def exclusive(self):  # noqa: ANN201
        """The connection, out of IDLE, for a command of the user's (open, move)."""
        async with self.lock:
            if not self.online or self.conn is None:
                raise ImapClientError(f"{self.client.name} is offline")
            await self.conn.ensure_not_idle()
            try:
                yield self.conn
            finally:
                self.wake.set()

    async def disconnect(self, polite: bool) -> None:
        """polite: wait for the worker's current step (it holds the lock), end IDLE, LOGOUT. Otherwise drop the
        socket at once, whatever is in flight (a cancelled IDLE start would otherwise block a LOGOUT)."""
        self.online = False
        self.wake.set()
        conn = self.conn
        if polite and conn is not None and not conn.closed:
            try:
                async with asyncio.timeout(self.client.timeout):
                    async with self.lock:
                        await conn.logout()
            except (TimeoutError, ImapClientError):
                pass
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.conn = None
        if conn is not None:
            conn.abort()


class DesktopClient:
    """A cached-mode desktop mail client of one user; see the module docstring and docs/clients.md."""

    def __init__(self, user: str, password: str, imap: object, *, submission: object | None = None,
                 folders: Sequence[str] = ("INBOX",), cache_path: Path | str | None = None,
                 resync: ResyncMethod = "auto", process_recalls_on_arrival: bool = False,
                 delete_recall_message_on_success: bool = True, name: str = "desktop",
                 offline_periods: Sequence[OfflinePeriod] = (), timeout: float = 10.0) -> None:
        self.user = user.strip().lower()
        self.password = password
        self.imap = imap
        self.submission = submission
        self.folders = tuple(folders)
        self.cache: MessageCache = SqliteMessageCache(cache_path) if cache_path else MessageCache()
        self.resync: ResyncMethod = resync
        self.process_recalls_on_arrival = process_recalls_on_arrival
        self.delete_recall_message_on_success = delete_recall_message_on_success
        self.name = name
        self.offline_periods = tuple(offline_periods)
        self.timeout = timeout
        self.events: list[ClientEvent] = []
        #: The last untagged EXISTS / EXPUNGE / VANISHED / FETCH lines as received, (folder, line): for narration.
        self.wire: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=WIRE_LINES)
        self.notices: list[LocalNotice] = []
        self.sent_notices: list[Any] = []  # recall_lab.fake_servers.recall.format.RecallNotice
        self._changes = _Changes()
        self._mirrors = {folder: _FolderMirror(self, folder) for folder in self.folders}
        self._started = False

    # --- life ------------------------------------------------------------------------------------------------

    async def start(self) -> DesktopClient:
        await self.go_online()
        self._started = True
        return self

    async def stop(self) -> None:
        for mirror in self._mirrors.values():
            await mirror.disconnect(polite=True)
        self.cache.close()

    async def __aenter__(self) -> DesktopClient:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def online(self) -> bool:
        return any(m.online for m in self._mirrors.values())

    async def go_offline(self) -> None:
        """The laptop lid closes: connections drop without LOGOUT; the cache stays as it is."""
        for mirror in self._mirrors.values():
            await mirror.disconnect(polite=False)
        self._record("offline", "", None)

    async def go_online(self) -> None:
        """Reconnect every folder, resync with what the server did meanwhile, fetch what is new."""
        try:
            for mirror in self._mirrors.values():
                if not mirror.online:
                    await mirror.disconnect(polite=False)
                    await mirror.connect()
        except BaseException:
            for mirror in self._mirrors.values():  # all folders or none: no half-online client
                await mirror.disconnect(polite=False)
            raise
        self._record("online", "", None)
        await self.settle()

    async def follow_schedule(self, periods: Sequence[OfflinePeriod] | None = None, *,
                              wait: Callable[[float], Awaitable[None]] | None = None) -> None:
        """Go offline and back online at the planned times (`offline_periods` by default). `wait(seconds)` is
        asyncio.sleep for a live demo; a simulated-time engine passes its own clock's wait."""
        waiter = wait or asyncio.sleep
        now = 0.0
        for period in sorted(periods if periods is not None else self.offline_periods, key=lambda p: p.start):
            await waiter(max(0.0, period.start - now))
            now = max(now, period.start)
            await self.go_offline()
            if math.isinf(period.end):
                return
            await waiter(period.end - now)
            now = period.end
            await self.go_online()

    async def settle(self) -> None:
        """Return once everything the server did before this call is reflected (a NOOP round trip per folder,
        then the new messages fetched and any recall processed)."""
        for mirror in self._mirrors.values():
            await mirror.settle()

    # --- what the user sees ----------------------------------------------------------------------------------

    def has_message_id(self, message_id: str) -> bool:
        return message_id in self.cache

    def preview(self, message_id: str) -> Preview | None:
        found = self.cache.find(message_id)
        return preview_of(found[0].raw) if found else None

    async def open(self, message_id: str) -> bytes:
        """The user opens the message: FETCH BODY[] (which sets \\Seen on the server)."""
        found = self.cache.find(message_id)
        if not found:
            raise LookupError(f"{self.name} of {self.user} has no message {message_id}")
        message = found[0]
        async with self._mirrors[message.folder].exclusive() as conn:
            records = await conn.uid_fetch(str(message.uid), "(UID FLAGS BODY[])")
        raw = message.raw
        for record in records:
            if record.uid == message.uid:
                raw = record.section("BODY[]") or raw
                flags = record.flags if record.flags is not None else message.flags | {"\\Seen"}
                self.cache.set_flags(message.folder, message.uid, frozenset(flags) | {"\\Seen"})
        self._record("opened", message.folder, message.uid)
        return raw

    async def move(self, message_id: str, folder: str) -> None:
        """UID MOVE the message to `folder` (what a client-side rule does)."""
        found = self.cache.find(message_id)
        if not found:
            raise LookupError(f"{self.name} of {self.user} has no message {message_id}")
        message = found[0]
        async with self._mirrors[message.folder].exclusive() as conn:
            await conn.uid_move(str(message.uid), folder)
        self._record("moved", message.folder, (message.uid, folder))

    # --- waiting without sleeping ----------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Await until `predicate()` is true; it is re-checked after every change the client sees."""
        async def until() -> None:
            while not predicate():
                await self._changes.next()

        await asyncio.wait_for(until(), timeout)

    async def wait_for_message(self, message_id: str, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: self.has_message_id(message_id), timeout)

    async def wait_for_gone(self, message_id: str, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: not self.has_message_id(message_id), timeout)

    async def wait_for_event(self, kind: str, timeout: float = 5.0, since: int = 0) -> ClientEvent:
        """The first event of `kind` at index >= `since` in `events`, awaited if it has not happened yet."""
        def found() -> ClientEvent | None:
            return next((e for e in self.events[since:] if e.kind == kind), None)

        await self.wait_for(lambda: found() is not None, timeout)
        event = found()
        assert event is not None
        return event

    def events_of(self, kind: str) -> list[ClientEvent]:
        return [e for e in self.events if e.kind == kind]

    def _record(self, kind: str, folder: str, data: Any) -> None:
        self.events.append(ClientEvent(kind, folder, data))
        self._changes.bump()

    # --- legacy recall ---------------------------------------------------------------------------------------

    async def _maybe_process_recall(self, mirror: _FolderMirror, message: CachedMessage) -> None:
        from recall_lab.fake_servers.recall import format as recall_format
        from recall_lab.harness.clients.legacy_recall import OriginalCopy, decide, sender_of, vouched_for

        try:
            instruction = recall_format.parse_recall_instruction(message.raw)
        except recall_format.RecallFormatError as exc:
            self._record("recall-malformed", mirror.folder, str(exc))
            return
        if instruction is None:
            return
        if not vouched_for(message.raw, self.user):
            # Only a recall that the recipient's own server vouched for (it came in through that organisation's
            # authenticated submission) is obeyed; a look-alike that came in through MX is ordinary mail.
            self._record("recall-unverified", mirror.folder, {"message_id": instruction.original_message_id,
                                                              "recall_from": instruction.sender})
            return
        conn = mirror.conn
        assert conn is not None
        original_mid = instruction.original_message_id
        impostor = [c for c in self.cache.find(original_mid) if sender_of(c.raw) != instruction.sender]
        if impostor:  # only the original's own sender may recall it (as Outlook checks)
            self._record("recall-refused", mirror.folder, {"message_id": original_mid,
                                                           "recall_from": instruction.sender})
            return
        copies = [c for c in self.cache.find(original_mid) if c.folder in self._mirrors]
        in_folder = [c for c in copies if c.folder == mirror.folder]
        if in_folder:  # the cache may lag behind a flag change: ask the server
            records = await conn.uid_fetch(compress_uids([c.uid for c in in_folder]), "(UID FLAGS)")
            for record in records:
                if record.uid is not None and record.flags is not None:
                    self.cache.set_flags(mirror.folder, record.uid, record.flags)
            copies = [c for c in self.cache.find(original_mid) if c.folder in self._mirrors]
        located = [OriginalCopy(c.folder, c.seen) for c in copies]
        if not any(c.folder == mirror.folder for c in copies):
            located += [OriginalCopy(folder, False) for folder in await self._find_elsewhere(original_mid)]
        decision = decide(mirror.folder, located)
        if decision.delete_from:
            uids = [c.uid for c in copies if c.folder == mirror.folder]
            if self.delete_recall_message_on_success:
                uids.append(message.uid)
            uid_set = compress_uids(uids)
            await conn.uid_store(uid_set, "+FLAGS.SILENT", r"(\Deleted)")
            await conn.uid_expunge(uid_set)
            for uid in uids:
                mirror._drop(uid)
            self.notices.append(LocalNotice("recalled", original_mid,
                                            f"{instruction.display_name} recalled the message "
                                            f'"{instruction.original_subject}".'))
        else:
            self.notices.append(LocalNotice("recall-failed", original_mid,
                                            f"{instruction.display_name} would like to recall the message "
                                            f'"{instruction.original_subject}".'))
        notice = recall_format.RecallNotice(original_message_id=original_mid,
                                            original_subject=instruction.original_subject,
                                            recipient=self.user, status=decision.status, detail=decision.detail)
        self._record("recall", mirror.folder, {"message_id": original_mid, "status": decision.status.value,
                                               "detail": decision.detail, "recall_uid": message.uid})
        await self._send_notice(notice, instruction.sender)

    async def _find_elsewhere(self, message_id: str) -> list[str]:
        """Folders (not mirrored) holding the message, found over a short side connection."""
        host, port = endpoint_of(self.imap)
        conn = ImapConnection(host, port, self.user, self.password, timeout=self.timeout)
        found: list[str] = []
        try:
            await conn.open()
            for name in await conn.list_mailboxes():
                if name in self._mirrors:
                    continue
                try:
                    await conn.select(name)
                    if await conn.uid_search("HEADER", "Message-ID", search_quoted(message_id)):
                        found.append(name)
                except ImapClientError:
                    continue
        except ImapClientError as exc:
            self._record("error", "", f"searching other folders: {exc}")
        finally:
            await conn.logout()
        return found

    async def _send_notice(self, notice: Any, to: str) -> None:
        """The success/failure notice back to the recall's sender, over authenticated submission."""
        from recall_lab.fake_servers.recall.format import build_notice

        if self.submission is None:
            self._record("notice-not-sent", "", "no submission endpoint configured")
            return
        import aiosmtplib

        host, port = endpoint_of(self.submission)
        msg = build_notice(notice, to=to, from_addr=self.user)
        try:
            await aiosmtplib.send(msg, sender=self.user, recipients=[to], hostname=host, port=port,
                                  username=self.user, password=self.password, use_tls=False, start_tls=False,
                                  timeout=self.timeout, local_hostname=client_name(self.user))
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._record("notice-error", "", str(exc))
            return
        self.sent_notices.append(notice)
        self._record("notice-sent", "", {"to": to, "status": notice.status.value,
                                         "message_id": notice.original_message_id})
