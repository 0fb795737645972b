"""One IMAP connection of a client emulator: aioimaplib underneath, with every untagged line tapped.

Why a wrapper: aioimaplib hands an untagged response to whichever command is pending and drops what no
command claims (an `EXISTS` arriving during a `UID FETCH`, a `VANISHED` during `UID EXPUNGE`). A client that
mirrors a mailbox must see every one of them in wire order, so the protocol subclass below calls
`on_untagged(line)` for each untagged line before aioimaplib dispatches it. The wrapper also checks results
(a NO/BAD becomes `ImapCommandError` with the server's text) and parses FETCH data with `imap_parse`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aioimaplib

from recall_lab.harness.clients.imap_parse import (
    FetchRecord,
    ParseError,
    parse_fetch,
    parse_untagged,
    parse_values,
    status_text,
)

#: Seconds a single command may take before the connection is considered dead.
COMMAND_TIMEOUT = 10.0

# aioimaplib runs only the commands of its table; NOTIFY (RFC 5465) is valid wherever LIST is and, like SELECT,
# waits for its tagged reply before anything else is sent.
aioimaplib.aioimaplib.Commands.setdefault(
    "NOTIFY", aioimaplib.aioimaplib.Cmd("NOTIFY", (aioimaplib.AUTH, aioimaplib.SELECTED),
                                        aioimaplib.aioimaplib.Exec.is_sync))


class ImapClientError(Exception):
    """The client could not talk to the server (refused, closed, timed out, login failed)."""


class ImapCommandError(ImapClientError):
    """The server answered NO or BAD; the message carries the command and the server's text."""


def quote_mailbox(name: str) -> str:
    """A mailbox name as an IMAP quoted string (names here are ASCII)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def endpoint_of(endpoint: object) -> tuple[str, int]:
    """(host, port) from an `Endpoint` (anything with .host/.port) or a (host, port) tuple."""
    if isinstance(endpoint, tuple | list):
        return str(endpoint[0]), int(endpoint[1])
    return str(endpoint.host), int(endpoint.port)  # type: ignore[attr-defined]


class _TappedProtocol(aioimaplib.IMAP4ClientProtocol):
    """aioimaplib's protocol, reporting each untagged line (first physical line) before dispatching it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, conn_lost_cb: Callable | None,
                 tap: Callable[[bytes], None]) -> None:
        super().__init__(loop, conn_lost_cb)
        self._tap = tap

    def _untagged_response(self, line: bytes):  # noqa: ANN202 - aioimaplib's signature
        if self.state not in (aioimaplib.CONNECTED,):
            try:
                self._tap(line)
            except Exception:  # a bug in a listener must not kill the connection's reader
                import logging

                logging.getLogger(__name__).exception("untagged listener failed on %r", line)
        return super()._untagged_response(line)


class _TappedIMAP4(aioimaplib.IMAP4):
    def __init__(self, host: str, port: int, tap: Callable[[bytes], None], conn_lost_cb: Callable | None,
                 timeout: float) -> None:
        self._tap = tap
        super().__init__(host=host, port=port, timeout=timeout, conn_lost_cb=conn_lost_cb)

    def create_client(self, host, port, loop, conn_lost_cb=None, ssl_context=None) -> None:  # noqa: ANN001
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _TappedProtocol(local_loop, conn_lost_cb, self._tap)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context))


@dataclass(frozen=True)
class SelectInfo:
    exists: int
    uidvalidity: int
    uidnext: int | None
    highestmodseq: int | None
    lines: tuple[bytes, ...]


class ImapConnection:
    """A logged-in IMAP connection; `on_untagged(line)` sees every untagged line in wire order."""

    def __init__(self, host: str, port: int, user: str, password: str, *,
                 on_untagged: Callable[[bytes], None] | None = None,
                 on_lost: Callable[[Exception | None], None] | None = None,
                 timeout: float = COMMAND_TIMEOUT) -> None:
        self.host, self.port, self.user = host, port, user
        self._password = password
        self._on_untagged = on_untagged
        self._on_lost = on_lost
        self.timeout = timeout
        self._imap: _TappedIMAP4 | None = None
        self._idle_task: asyncio.Future | None = None
        self.capabilities: frozenset[str] = frozenset()
        self.enabled: frozenset[str] = frozenset()  # what ENABLE turned on (ENABLE is refused once selected)
        self.closed = True

    # --- life ------------------------------------------------------------------------------------------------

    async def open(self) -> ImapConnection:
        self._imap = _TappedIMAP4(self.host, self.port, self._tap, self._lost, self.timeout)
        try:
            await self._imap.wait_hello_from_server()
        except (TimeoutError, OSError, aioimaplib.AioImapException) as exc:
            self._abort_transport()
            raise ImapClientError(f"cannot connect to IMAP {self.host}:{self.port}: {exc or type(exc).__name__}") \
                from exc
        self.closed = False
        response = await self._run(self._imap.login(self.user, self._password), "LOGIN")
        if response.result != "OK":
            self.abort()
            raise ImapClientError(f"login as {self.user} refused: {status_text(response.lines)}")
        await self._run(self._imap.protocol.capability(), "CAPABILITY")
        self.capabilities = frozenset(c.upper() for c in self._imap.protocol.capabilities)
        return self

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    async def logout(self) -> None:
        """Polite close (IDLE ended, LOGOUT); falls back to dropping the socket."""
        if self._imap is None or self.closed:
            self.abort()
            return
        try:
            await self.ensure_not_idle()
            await asyncio.wait_for(self._imap.logout(), self.timeout)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once, as a laptop lid closing does (no LOGOUT)."""
        self.closed = True
        if self._idle_task is not None and not self._idle_task.done():
            self._idle_task.cancel()
        self._idle_task = None
        self._abort_transport()

    def _abort_transport(self) -> None:
        if self._imap is None:
            return
        for task in list(getattr(self._imap, "tasks", ())) + list(getattr(self._imap.protocol, "tasks", ())):
            task.cancel()
        waiter = getattr(self._imap, "_idle_waiter", None)
        if waiter is not None:
            waiter.cancel()
        transport = self._imap.protocol.transport
        if transport is not None:
            transport.abort()
        client_task = getattr(self._imap, "_client_task", None)
        if client_task is not None and not client_task.done():
            client_task.cancel()

    def _tap(self, line: bytes) -> None:
        if self._on_untagged is not None:
            self._on_untagged(line)

    def _lost(self, exc: Exception | None) -> None:
        was_open = not self.closed
        self.closed = True
        if was_open and self._on_lost is not None:
            self._on_lost(exc)

    # --- commands --------------------------------------------------------------------------------------------

    async def _run(self, coro, what: str):  # noqa: ANN001, ANN202
        if self._imap is None or self.closed:
            coro.close()
            raise ImapClientError(f"{what}: not connected")
        try:
            return await asyncio.wait_for(coro, self.timeout)
        except (TimeoutError, aioimaplib.CommandTimeout) as exc:
            self.abort()
            raise ImapClientError(f"{what}: no answer within {self.timeout} s") from exc
        except aioimaplib.AioImapException as exc:
            raise ImapClientError(f"{what}: {exc}") from exc
        except (ConnectionError, OSError) as exc:
            self.abort()
            raise ImapClientError(f"{what}: connection lost ({exc})") from exc

    async def _checked(self, coro, what: str):  # noqa: ANN001, ANN202
        response = await self._run(coro, what)
        if response.result != "OK":
            raise ImapCommandError(f"{what}: {response.result} {status_text(response.lines)}")
        return response

    @property
    def _protocol(self) -> aioimaplib.IMAP4ClientProtocol:
        assert self._imap is not None
        return self._imap.protocol

    async def enable(self, *capabilities: str) -> None:
        await self._checked(self._protocol.simple_command("ENABLE", *capabilities), "ENABLE")
        self.enabled |= {c.upper() for c in capabilities}

    async def notify_set(self, mailboxes: Sequence[str], events: str = "MessageNew MessageExpunge FlagChange") \
            -> None:
        """NOTIFY SET (selected (events)) (mailboxes (...) (events)) (RFC 5465): STATUS lines for changes in those
        mailboxes reach `on_untagged`, during IDLE and between commands, and the selected one keeps its EXISTS,
        EXPUNGE and FETCH: once NOTIFY is set, a server sends those only when the SELECTED filter asks
        (Dovecot keeps to it; a client that leaves it out hears nothing of its own folder)."""
        names = " ".join(quote_mailbox(name) for name in mailboxes)
        protocol = self._protocol
        command = aioimaplib.Command("NOTIFY", protocol.new_tag(), "SET",
                                     f"(selected ({events})) (mailboxes ({names}) ({events}))", loop=protocol.loop)
        await self._checked(protocol.execute(command), "NOTIFY SET")

    async def select(self, mailbox: str = "INBOX", *, condstore: bool = False,
                     qresync: tuple[int, int, str] | None = None) -> SelectInfo:
        """SELECT, optionally `(CONDSTORE)` or `(QRESYNC (uidvalidity modseq known-uids))` (RFC 7162)."""
        arg = quote_mailbox(mailbox)
        if qresync is not None:
            validity, modseq, known = qresync
            arg += f" (QRESYNC ({validity} {modseq}" + (f" {known}" if known else "") + "))"
        elif condstore:
            arg += " (CONDSTORE)"
        response = await self._checked(self._protocol.select(arg), f"SELECT {mailbox}")
        exists, validity, uidnext, highest = 0, 0, None, None
        for line in response.lines:
            if not isinstance(line, bytes):
                continue
            info = parse_untagged(line)
            if info.kind == "exists":
                exists = info.number
            elif info.kind == "uidvalidity":
                validity = info.number
            elif info.kind == "uidnext":
                uidnext = info.number
            elif info.kind == "highestmodseq":
                highest = info.number
        return SelectInfo(exists, validity, uidnext, highest,
                          tuple(b for b in response.lines if isinstance(b, bytes)))

    async def uid_fetch(self, uids: str, items: str, *, changedsince: int | None = None,
                        vanished: bool = False) -> list[FetchRecord]:
        parts = items if items.startswith("(") else f"({items})"
        if changedsince is not None:
            parts += f" (CHANGEDSINCE {changedsince}" + (" VANISHED" if vanished else "") + ")"
        response = await self._checked(self._protocol.fetch(uids, parts, by_uid=True, timeout=self.timeout),
                                       f"UID FETCH {uids}")
        return parse_fetch(response.lines)

    async def uid_search(self, *criteria: str) -> list[int]:
        response = await self._checked(self._protocol.search(*criteria, charset=None, by_uid=True),
                                       "UID SEARCH")
        # aioimaplib files "* SEARCH 1 2" under the SEARCH command with the word removed ("1 2"); the last
        # line is the tagged status text
        uids: list[int] = []
        for line in response.lines[:-1]:
            if not isinstance(line, bytes):
                continue
            if line.upper().startswith(b"SEARCH"):
                line = line[6:]
            tokens = line.replace(b"(", b" ").replace(b")", b" ").split()
            if b"MODSEQ" in (t.upper() for t in tokens):
                tokens = tokens[: [t.upper() for t in tokens].index(b"MODSEQ")]
            if all(t.isdigit() for t in tokens):
                uids.extend(int(t) for t in tokens)
        return sorted(set(uids))

    async def uid_store(self, uids: str, action: str, flags: str) -> list[FetchRecord]:
        response = await self._checked(self._protocol.store(uids, action, flags, by_uid=True),
                                       f"UID STORE {uids}")
        return parse_fetch(response.lines)

    async def uid_expunge(self, uids: str) -> None:
        """UID EXPUNGE (UIDPLUS) when the server has it, else a plain EXPUNGE."""
        if self.has("UIDPLUS"):
            await self._checked(self._protocol.expunge(uids, by_uid=True), f"UID EXPUNGE {uids}")
        else:
            await self._checked(self._protocol.expunge(), "EXPUNGE")

    async def uid_move(self, uids: str, mailbox: str) -> None:
        """UID MOVE when the server has MOVE, else UID COPY + \\Deleted + expunge."""
        if self.has("MOVE"):
            await self._checked(self._protocol.move(uids, quote_mailbox(mailbox), by_uid=True), "UID MOVE")
            return
        await self._checked(self._protocol.copy(uids, quote_mailbox(mailbox), by_uid=True), "UID COPY")
        await self.uid_store(uids, "+FLAGS.SILENT", r"(\Deleted)")
        await self.uid_expunge(uids)

    async def create(self, mailbox: str) -> None:
        await self._checked(self._protocol.simple_command("CREATE", quote_mailbox(mailbox)), "CREATE")

    async def list_mailboxes(self) -> list[str]:
        response = await self._checked(self._protocol.simple_command("LIST", '""', '"*"'), "LIST")
        # aioimaplib files "* LIST (...) "/" INBOX" under LIST with the word removed; the last line is the status
        names = []
        for line in response.lines[:-1]:
            if not isinstance(line, bytes):
                continue
            if line.upper().startswith(b"LIST "):
                line = line[5:]
            try:
                values = parse_values([line])
            except ParseError:
                continue
            if len(values) >= 3 and isinstance(values[0], list) and isinstance(values[2], bytes):
                flags = {v.lower() for v in values[0] if isinstance(v, bytes)}
                if b"\\noselect" not in flags and b"\\nonexistent" not in flags:
                    names.append(values[2].decode("utf-8", "replace"))
        return names

    async def append(self, raw: bytes, mailbox: str = "INBOX", flags: Sequence[str] = ()) -> None:
        flag_text = "(" + " ".join(flags) + ")" if flags else None
        await self._checked(self._protocol.append(raw, quote_mailbox(mailbox), flag_text, None,
                                                  timeout=self.timeout), "APPEND")

    async def noop(self) -> None:
        await self._checked(self._protocol.simple_command("NOOP"), "NOOP")

    # --- IDLE ------------------------------------------------------------------------------------------------

    @property
    def idling(self) -> bool:
        return self._idle_task is not None and not self._idle_task.done()

    async def idle_start(self) -> None:
        """Enter IDLE (returns once the server said "+ idling"); pushes then reach `on_untagged`."""
        if self.idling:
            return
        if not self.has("IDLE"):
            raise ImapClientError("the server has no IDLE")
        assert self._imap is not None
        try:
            self._idle_task = await asyncio.wait_for(self._imap.idle_start(timeout=24 * 3600), self.timeout)
        except (TimeoutError, aioimaplib.AioImapException, OSError) as exc:
            self.abort()
            raise ImapClientError(f"IDLE: {exc or type(exc).__name__}") from exc
        self._drain_idle_queue()

    async def ensure_not_idle(self) -> None:
        """End IDLE (DONE, await the tagged OK) if it is running; a no-op otherwise."""
        task = self._idle_task
        if task is None:
            return
        self._idle_task = None
        if task.done():
            self._drain_idle_queue()
            return
        assert self._imap is not None
        try:
            self._imap.idle_done()
            await asyncio.wait_for(task, self.timeout)
        except (TimeoutError, aioimaplib.AioImapException, OSError) as exc:
            self.abort()
            raise ImapClientError(f"IDLE DONE: {exc or type(exc).__name__}") from exc
        finally:
            self._drain_idle_queue()

    def _drain_idle_queue(self) -> None:
        """aioimaplib also queues IDLE pushes; we read them from the tap, so the queue is just emptied."""
        if self._imap is None:
            return
        queue = self._imap.protocol.idle_queue
        while not queue.empty():
            queue.get_nowait()
