"""The desktop client emulator: cached mode, like Outlook for Windows.

Why it behaves this way: a cached-mode client keeps a local copy of the mailbox and shows that copy. Whether a
recalled message disappears from the recipient's screen depends on the client hearing of the expunge: at once
over a persistent IDLE connection while online, or at the next resync (QRESYNC, CONDSTORE or a UID comparison)
after an offline period. In the legacy recall mode the client itself carries the recall out when the recall
instruction arrives, and only if the original is unread and in the same folder (`legacy_recall.decide`). With
Outlook's automatic processing turned off (`process_recalls_on_arrival=False`) it acts on a recall only when the
user opens the recall message (`open`, `open_recall`), with the same rule: so the recall works if the recall
message is opened while the original is still unread, and fails if the original was opened first.

How it hears of changes: when the server offers NOTIFY (RFC 5465) and several folders are mirrored, the first
folder's connection idles and asks, with `NOTIFY SET (selected (...)) (mailboxes (...) (MessageNew MessageExpunge
FlagChange))`, for its own folder's pushes and a STATUS line whenever another mirrored folder changes; a second connection then selects that folder and
resynchronises it (QRESYNC / CONDSTORE, as after a reconnect). So a recall in a folder that no connection idles
on still reaches the cache at once, over two connections whatever the number of folders. Without NOTIFY (or
with `notify=False`) it keeps one connection per mirrored folder (as Outlook opens several), each in IDLE
between commands. Every untagged line reaches the mirror of the folder selected on its connection
(`_FolderMirror._on_untagged`) in wire order (see `connection.py`), which keeps the sequence-number-to-UID map
and applies EXPUNGE / VANISHED / flag pushes to the cache immediately.
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
from recall_lab.harness.clients.connection import (
    ImapClientError,
    ImapCommandError,
    ImapConnection,
    endpoint_of,
)
from recall_lab.harness.clients.imap_parse import ParseError, compress_uids, parse_untagged, parse_values
from recall_lab.harness.clients.preview import Preview, preview_of
from recall_lab.harness.own_name import client_name

log = logging.getLogger(__name__)

ResyncMethod = Literal["auto", "qresync", "condstore", "uids"]

#: Without IDLE the client polls with NOOP this often (seconds); real clients poll every few minutes.
POLL_INTERVAL = 0.5
#: How many pushed lines `DesktopClient.wire` keeps.
WIRE_LINES = 200


def _loop_gone() -> bool:
    """Whether this code runs without a running event loop (a coroutine being closed after its loop ended)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


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


def _looks_like_recall(raw: bytes) -> bool:
    """Whether a message carries the recall protocol's fields at all (the cheap test before parsing)."""
    from recall_lab.fake_servers.recall.format import has_recall_headers

    return has_recall_headers(raw)


def status_mailbox(line: bytes) -> str | None:
    """The mailbox a `* STATUS name (...)` line names, or None when it cannot be read from this line alone (a
    literal)."""
    text = line[2:] if line.startswith(b"* ") else line
    if text[:7].upper() != b"STATUS ":
        return None
    try:
        values = parse_values([text[7:]])
    except ParseError:
        return None
    if len(values) < 2 or not isinstance(values[0], bytes) or not isinstance(values[1], list):
        return None
    return values[0].decode("utf-8", "replace")


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
    """One mirrored folder: its sequence map and cache, kept up to date over whichever connection (`link`) has
    the folder selected at the moment (`conn`; None while no connection has it selected)."""

    def __init__(self, client: DesktopClient, folder: str) -> None:
        self.client = client
        self.folder = folder
        self.link: _Link | None = None
        self.conn: ImapConnection | None = None
        self.seqmap: list[int | None] = []
        self.need_fetch = False
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
                if self.link is not None:
                    self.link.wake.set()
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

    # --- resync ---------------------------------------------------------------------------------------------

    async def _select_and_resync(self, kind: str = "resync") -> None:
        """SELECT the folder and bring the cache in line with the server; `kind` names the event recorded when
        the folder had been synchronised before ("resync" after connecting, "reselect" on a NOTIFY connection
        that comes back to the folder)."""
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
        if conn.has("QRESYNC") and conn.has("ENABLE") and "QRESYNC" not in conn.enabled:
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
            client._record(kind, self.folder, {"method": method, "dropped": tuple(sorted(set(dropped)))})

    # --- what is new ----------------------------------------------------------------------------------------

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


class _Link:
    """One IMAP connection of the client and the worker task that keeps it busy.

    A folder link serves one folder, selected for good, and waits in IDLE (or polls with NOOP); the home link of
    a NOTIFY client is such a link that also watches the other folders (`watch`). The worker link of a NOTIFY
    client serves the other folders in turn: it never idles, and selects a folder when a STATUS line (or a
    command of the user's) calls for it, resynchronising it the way a reconnect does.
    """

    def __init__(self, client: DesktopClient, mirrors: Sequence[_FolderMirror], *, worker: bool = False) -> None:
        self.client = client
        self.mirrors = {m.folder: m for m in mirrors}
        for mirror in mirrors:
            mirror.link = self
        self.worker = worker
        self.watch: tuple[str, ...] = ()  # NOTIFY SET for these folders after login (the home link)
        self.home = not worker and mirrors[0].folder == client.folders[0]
        self.conn: ImapConnection | None = None
        self.selected: _FolderMirror | None = None
        self.dirty: dict[str, None] = {}  # folders to look at again, in the order they were named
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.online = False
        self.idles = False  # waits in IDLE between commands (a folder link on a server with IDLE)

    @property
    def label(self) -> str:
        """The folder this connection is about, for events."""
        return self.selected.folder if self.selected is not None else next(iter(self.mirrors))

    # --- the tap: runs inside data_received, in wire order --------------------------------------------------

    def _on_untagged(self, line: bytes) -> None:
        if line[:9].upper() == b"* STATUS ":
            self.client._on_status(line)
        elif self.selected is not None:
            self.selected._on_untagged(line)

    def _on_lost(self, exc: Exception | None) -> None:
        if self.online:
            self.online = False
            self.client._record("disconnected", self.label, str(exc) if exc else "closed by the server")
            self.wake.set()

    def mark_dirty(self, folder: str) -> None:
        """Look at `folder` again (a NOOP when selected here, else SELECT and resync) at the next step."""
        self.dirty[folder] = None
        self.wake.set()

    # --- connect --------------------------------------------------------------------------------------------

    async def connect(self) -> None:
        client = self.client
        host, port = endpoint_of(client.imap)
        conn = ImapConnection(host, port, client.user, client.password, on_untagged=self._on_untagged,
                              on_lost=self._on_lost, timeout=client.timeout)
        self.selected = None
        self.dirty.clear()
        for mirror in self.mirrors.values():
            mirror.conn = None
            mirror.seqmap = []
            mirror.need_fetch = False
        await conn.open()
        self.conn = conn
        self.online = True
        self.idles = conn.has("IDLE") and not self.worker
        try:
            if self.home:
                await client._arrange(self)  # NOTIFY SET before SELECT: no change slips between the two
            for mirror in self.mirrors.values():
                await self._switch(mirror, "resync")
                if self.worker:
                    await mirror._process_pending()  # before the next folder takes the connection
        except BaseException:
            self.online = False
            conn.abort()
            raise
        self.wake.set()
        self.task = asyncio.create_task(self._loop(), name=f"desktop {client.user} {self.label}")

    async def _switch(self, mirror: _FolderMirror, kind: str) -> None:
        """Select `mirror`'s folder on this connection and resynchronise it."""
        assert self.conn is not None
        if self.selected is not None:
            self.selected.conn = None
        self.selected = mirror
        mirror.conn = self.conn
        mirror.seqmap = []
        mirror.need_fetch = False
        try:
            await mirror._select_and_resync(kind)
        except ImapCommandError:
            mirror.conn = None
            self.selected = None  # a failed SELECT leaves no mailbox selected
            raise
        mirror.need_fetch = True
        self.wake.set()

    # --- the worker: fetch what is new, then IDLE (or wait) until the next push -----------------------------

    async def _loop(self) -> None:
        conn = self.conn
        assert conn is not None
        idles = self.idles
        try:
            while self.online:
                async with self.lock:
                    if not self.online:
                        break
                    await conn.ensure_not_idle()
                    self.wake.clear()
                    await self._work()
                    if not self.wake.is_set() and idles:
                        await conn.idle_start()
                if idles or self.worker:
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
                self.client._record("disconnected", self.label, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: report it as an event rather than dying silently
            if _loop_gone():
                # an abandoned worker closed by the garbage collector after its event loop was closed (a run cut
                # off by Ctrl-C): its connection's clean-up cannot run any more, and there is nobody to tell
                self.online = False
                return
            log.exception("desktop client %s: folder %s failed", self.client.user, self.label)
            self.online = False
            self.client._record("error", self.label, repr(exc))

    async def _work(self) -> None:
        """The folders named since the last step (NOOP or reselect each, fetch what is new), then the selected
        folder's new messages. Runs with the lock held and the connection out of IDLE."""
        assert self.conn is not None
        while self.dirty:
            name = next(iter(self.dirty))
            del self.dirty[name]
            mirror = self.mirrors.get(name)
            if mirror is None:
                continue
            if mirror is self.selected:
                await self.conn.noop()
            else:
                try:
                    await self._switch(mirror, "reselect")
                except ImapCommandError as exc:
                    self.client._record("error", name, str(exc))
                    continue
            await mirror._process_pending()
        if self.selected is not None:
            await self.selected._process_pending()

    async def settle(self) -> None:
        async with self.lock:
            if not self.online or self.conn is None:
                return
            await self.conn.ensure_not_idle()
            await self.conn.noop()
            await self._work()
        self.wake.set()

    @contextlib.asynccontextmanager
    async def exclusive(self, mirror: _FolderMirror):  # noqa: ANN201
        """The connection, out of IDLE and with `mirror`'s folder selected, for a command of the user's."""
        async with self.lock:
            if not self.online or self.conn is None:
                raise ImapClientError(f"{self.client.name} is offline")
            await self.conn.ensure_not_idle()
            try:
                if self.selected is not mirror:
                    await self._switch(mirror, "reselect")
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
        if self.selected is not None:
            self.selected.conn = None
        self.selected = None
        if conn is not None:
            conn.abort()


class DesktopClient:
    """A cached-mode desktop mail client of one user; see the module docstring and docs/clients.md."""

    def __init__(self, user: str, password: str, imap: object, *, submission: object | None = None,
                 folders: Sequence[str] = ("INBOX",), cache_path: Path | str | None = None,
                 resync: ResyncMethod = "auto", process_recalls_on_arrival: bool = False,
                 delete_recall_message_on_success: bool = True, name: str = "desktop",
                 offline_periods: Sequence[OfflinePeriod] = (), timeout: float = 10.0,
                 notify: bool = True) -> None:
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
        #: Use NOTIFY when the server offers it and more than one folder is mirrored (False: IDLE per folder).
        self.use_notify = notify
        #: Whether this client watches its folders over NOTIFY (decided on the first connection).
        self.notifying = False
        self.events: list[ClientEvent] = []
        #: The last untagged EXISTS / EXPUNGE / VANISHED / FETCH / STATUS lines as received, (folder, line): for
        #: narration.
        self.wire: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=WIRE_LINES)
        self.notices: list[LocalNotice] = []
        self.sent_notices: list[Any] = []  # recall_lab.fake_servers.recall.format.RecallNotice
        #: (folder, uid) of the recall messages already acted on: a recall is processed once, on arrival or
        #: when opened, never twice.
        self._recalls_done: set[tuple[str, int]] = set()
        self._changes = _Changes()
        self._mirrors = {folder: _FolderMirror(self, folder) for folder in self.folders}
        #: The connections: the first folder's, then (once the server's capabilities are known) one per other
        #: folder, or with NOTIFY one worker connection for all of them.
        self._links: list[_Link] = [_Link(self, [self._mirrors[self.folders[0]]])] if self.folders else []
        self._arranged = False
        self._started = False

    # --- life ------------------------------------------------------------------------------------------------

    async def start(self) -> DesktopClient:
        await self.go_online()
        self._started = True
        return self

    async def stop(self) -> None:
        for link in self._links:
            await link.disconnect(polite=True)
        self.cache.close()

    async def __aenter__(self) -> DesktopClient:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def online(self) -> bool:
        return any(link.online for link in self._links)

    @property
    def connection_count(self) -> int:
        """How many IMAP connections the client holds open now."""
        return sum(1 for link in self._links if link.online)

    @property
    def idling_folders(self) -> frozenset[str]:
        """The folders selected on a connection that waits in IDLE between commands (the others are told of
        over NOTIFY)."""
        return frozenset(link.selected.folder for link in self._links
                         if link.online and link.idles and link.selected is not None)

    async def go_offline(self) -> None:
        """The laptop lid closes: connections drop without LOGOUT; the cache stays as it is."""
        for link in self._links:
            await link.disconnect(polite=False)
        self._record("offline", "", None)

    async def go_online(self) -> None:
        """Reconnect every folder, resync with what the server did meanwhile, fetch what is new."""
        try:
            index = 0
            while index < len(self._links):  # the first connection's arrangement adds the others
                link = self._links[index]
                if not link.online:
                    await link.disconnect(polite=False)
                    await link.connect()
                index += 1
        except BaseException:
            for link in self._links:  # all folders or none: no half-online client
                await link.disconnect(polite=False)
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
        """Return once everything the server did before this call is reflected (a NOOP round trip per
        connection, then the new messages fetched and any recall processed). With NOTIFY the first connection's
        NOOP brings the STATUS lines still owed, so the worker connection settles after it."""
        for link in self._links:
            await link.settle()

    async def _arrange(self, home: _Link) -> None:
        """On the first connection, logged in and nothing selected yet: decide how the other folders are
        watched (once), and with NOTIFY tell the server which folders to report."""
        conn = home.conn
        assert conn is not None
        if self._arranged:
            if self.notifying:
                await conn.notify_set(home.watch)
            return
        self._arranged = True
        others = [mirror for folder, mirror in self._mirrors.items() if folder != self.folders[0]]
        use = self.use_notify and bool(others) and conn.has("NOTIFY")
        if use:
            try:
                await conn.notify_set(self.folders)
            except ImapCommandError as exc:
                self._record("notify-refused", "", str(exc))
                use = False
        self.notifying = use
        if use:
            home.watch = self.folders
            self._links.append(_Link(self, others, worker=True))
        else:
            self._links.extend(_Link(self, [mirror]) for mirror in others)

    def _on_status(self, line: bytes) -> None:
        """A STATUS line (NOTIFY): the folder changed on the server; the connection serving it looks again."""
        name = status_mailbox(line)
        self._record("notify", name or "", line.decode("utf-8", "replace").strip())
        if name is None:  # not readable here: look at every folder the worker serves
            targets = [m for m in self._mirrors.values() if m.link is not None and m.link.worker]
        else:
            mirror = self._mirrors.get(name)
            targets = [mirror] if mirror is not None else []
        for mirror in targets:
            self.wire.append((mirror.folder, line))
            if mirror.link is not None:
                mirror.link.mark_dirty(mirror.folder)

    def _link_of(self, mirror: _FolderMirror) -> _Link:
        if mirror.link is None:
            raise ImapClientError(f"{self.name} is offline")
        return mirror.link

    # --- what the user sees ----------------------------------------------------------------------------------

    def has_message_id(self, message_id: str) -> bool:
        return message_id in self.cache

    def preview(self, message_id: str) -> Preview | None:
        found = self.cache.find(message_id)
        return preview_of(found[0].raw) if found else None

    async def open(self, message_id: str) -> bytes:
        """The user opens the message: FETCH BODY[] (which sets \\Seen on the server). A recall message opened by
        the user of a client that does not process recalls on arrival is processed now (Outlook with automatic
        processing off: the recall is acted on when its message is opened)."""
        found = self.cache.find(message_id)
        if not found:
            raise LookupError(f"{self.name} of {self.user} has no message {message_id}")
        message = found[0]
        mirror = self._mirrors[message.folder]
        async with self._link_of(mirror).exclusive(mirror) as conn:
            records = await conn.uid_fetch(str(message.uid), "(UID FLAGS BODY[])")
            raw = message.raw
            for record in records:
                if record.uid == message.uid:
                    raw = record.section("BODY[]") or raw
                    flags = record.flags if record.flags is not None else message.flags | {"\\Seen"}
                    self.cache.set_flags(message.folder, message.uid, frozenset(flags) | {"\\Seen"})
            self._record("opened", message.folder, message.uid)
            if not self.process_recalls_on_arrival and _looks_like_recall(message.raw):
                await self._maybe_process_recall(mirror, message)
        return raw

    async def open_recall(self, original_message_id: str) -> bytes | None:
        """The user opens the recall message that names `original_message_id` (the first one the cache holds);
        None when there is none (a cloud recall is not delivered to the recipient, or it was processed and
        deleted already)."""
        from recall_lab.fake_servers.recall import format as recall_format

        try:
            wanted = recall_format.normalise_message_id(original_message_id)
        except recall_format.RecallFormatError:
            return None
        for message in self.cache.all():
            if not _looks_like_recall(message.raw):
                continue
            try:
                instruction = recall_format.parse_recall_instruction(message.raw)
            except recall_format.RecallFormatError:
                continue
            if instruction is not None and instruction.original_message_id == wanted and message.message_id:
                return await self.open(message.message_id)
        return None

    async def move(self, message_id: str, folder: str) -> None:
        """UID MOVE the message to `folder` (what a client-side rule does)."""
        found = self.cache.find(message_id)
        if not found:
            raise LookupError(f"{self.name} of {self.user} has no message {message_id}")
        message = found[0]
        mirror = self._mirrors[message.folder]
        async with self._link_of(mirror).exclusive(mirror) as conn:
            await conn.uid_move(str(message.uid), folder)
        self._record("moved", message.folder, (message.uid, folder))
        target = self._mirrors.get(folder)
        if self.notifying and target is not None and target.link is not None:
            target.link.mark_dirty(folder)  # NOTIFY does not report a connection's own changes back to it

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
        if (mirror.folder, message.uid) in self._recalls_done:
            return  # processed already (on arrival, or when the user opened it before)
        self._recalls_done.add((mirror.folder, message.uid))
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
