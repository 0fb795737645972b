"""One IMAP connection's protocol state machine (sans-I/O).

Why sans-I/O: bytes in (`feed`), bytes out (through `SessionIO.write`), store events in (`on_store_event`).
The asyncio adapter in server.py only moves bytes, and tests drive a session without any socket. Commands of
the selected state live in message_commands.py, mailbox commands in mailbox_commands.py, the states, what each
allows and their moves in state.py; this module holds the framing, the dispatch and the any-state commands.

Why commands may run in pieces: a client that pipelines big FETCHes and never reads must not make us build
gigabytes of answers, and one command over many messages must not hold the event loop that every other client
shares. So a command over a message set returns a generator (its "steps": one message, one batch, one chunk of
a large literal each), and the session runs steps and queued commands only while (a) the adapter has not said
its output is over the high-water mark (`pause_output` / `resume_output`) and (b) the time slice
(`SessionConfig.time_slice`, read on the clock passed in) lasts. When it stops with work left, `runnable` is
true and the adapter calls `proceed()` later. Commands still run one after another, each to its tagged reply,
and bytes not yet framed stay bytes, so a queued command is judged (literal limits, STARTTLS) only when its
turn comes.

Why a login can hold the whole session: a password guesser must get one answer per delay, however much it
pipelines. A failed login (or, from an address under penalty, a login not checked yet) asks the adapter to
`hold`; until it calls `release_hold`, nothing is sent and no queued command runs (see `_check_login`).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ..accounts import Accounts
from ..guard import FailureVerdict, LoginThrottle
from ..store.base import MailboxDeleted, MailboxRenamed, MailStore, StoreError
from ..store.base import NoSuchMailbox as _NoSuchMailbox
from ..transcript import TranscriptRecorder
from .append import AppendCommands
from .capabilities import ENABLEABLE, capabilities
from .compress import CompressCommand
from .errors import CommandFailed, ImapError, ParseError
from .esearch import SearchContextCommands
from .framing import Command, Continue, FrameEvent, Framer, Refused, tag_of
from .lexer import Lexer
from .mailbox_commands import MailboxCommands
from .message_commands import MessageCommands
from .mime.cache import ViewCache
from .names import MailboxNameLimits
from .notify import NotifyCommands
from .rev2 import SPELLING, Rev2Session
from .scram import MECHANISM as SCRAM
from .scram import ScramCommands
from .search import SearchLimits
from .selected import MODSEQ_SHIFT, SelectedMailbox
from .state import ALLOWED, Event, SessionState, StateMachine
from .thread import ThreadCommands
from .user_sessions import UserSessions

log = logging.getLogger("recall_lab.fake_servers.imap")
_LITERAL_AT_EOL = re.compile(rb"\{(\d+)\+?\}\r\n")

PRE_AUTH_MAX_LITERAL = 64 * 1024

#: Output is handed to the transport once this much has been built (and at the end of every run), so the
#: adapter learns early that the client is not reading, and FETCH 1:* of small items is still few writes.
FLUSH_AT = 64 * 1024

NOT_AUTHENTICATED = SessionState.NOT_AUTHENTICATED
AUTHENTICATED = SessionState.AUTHENTICATED
SELECTED = SessionState.SELECTED
IDLE = SessionState.IDLE
AUTHENTICATING = SessionState.AUTHENTICATING
STARTTLS_PENDING = SessionState.STARTTLS_PENDING
LOGOUT = SessionState.LOGOUT


class SessionIO(Protocol):
    """What the session needs from its transport."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def start_tls(self) -> None: ...

    def hold(self, seconds: float) -> None:
        """Call `release_hold()` after `seconds` (a login's answer or check waits; reading stays paused)."""

    # Optional: `before_command() -> bool`, asked before each command line; False: the adapter has ended the
    # connection (an injected fault) and the line is not run.
    # Optional: `offload(work)`, run `work` in a thread, then call `release_hold()` (SCRAM keys, scram.py).
    # Optional: `start_compression()`, deflate both ways from now on (COMPRESS, compress.py).
    # Optional: `wake()`, call the session's `wake()` soon (after the current callback) and once however
    # often it is asked meanwhile. Without it, an idling client is sent each change as it happens.


@dataclass
class SessionConfig:
    name: str = "recall-lab"
    tls_available: bool = False
    login_disabled_without_tls: bool = False
    max_line: int = 65536
    max_literal: int = 50 * 1024 * 1024
    #: Seconds a session may run commands before it gives the event loop back (None: until its work is done
    #: or its output is over the mark; the server sets one, sans-I/O tests need none).
    time_slice: float | None = None
    #: How deep and how long a SEARCH/SORT program may be (search.py says why).
    search_limits: SearchLimits = SearchLimits()
    #: How long and how deep a mailbox name may be (names.py says why).
    mailbox_names: MailboxNameLimits = MailboxNameLimits()


@dataclass
class _Job:
    """A command running in steps: its generator, and the tag and name its failure is reported under."""

    tag: str
    name: str
    steps: Iterator[None]


# command name -> handler method name (the states each is valid in: state.ALLOWED)
COMMANDS: dict[str, str] = {
    "CAPABILITY": "cmd_capability",
    "NOOP": "cmd_noop",
    "LOGOUT": "cmd_logout",
    "STARTTLS": "cmd_starttls",
    "LOGIN": "cmd_login",
    "AUTHENTICATE": "cmd_authenticate",
    "ID": "cmd_id",
    "ENABLE": "cmd_enable",
    "NAMESPACE": "cmd_namespace",
    "SELECT": "cmd_select",
    "EXAMINE": "cmd_examine",
    "CREATE": "cmd_create",
    "DELETE": "cmd_delete",
    "RENAME": "cmd_rename",
    "SUBSCRIBE": "cmd_subscribe",
    "UNSUBSCRIBE": "cmd_unsubscribe",
    "LIST": "cmd_list",
    "LSUB": "cmd_lsub",
    "STATUS": "cmd_status",
    "APPEND": "cmd_append",
    "IDLE": "cmd_idle",
    "CHECK": "cmd_noop",
    "CLOSE": "cmd_close",
    "UNSELECT": "cmd_unselect",
    "EXPUNGE": "cmd_expunge",
    "SEARCH": "cmd_search",
    "SORT": "cmd_sort",
    "FETCH": "cmd_fetch",
    "STORE": "cmd_store",
    "COPY": "cmd_copy",
    "MOVE": "cmd_move",
    "UID": "cmd_uid",
    "THREAD": "cmd_thread",
    "CANCELUPDATE": "cmd_cancelupdate",
    "NOTIFY": "cmd_notify",
    "COMPRESS": "cmd_compress",
}

#: Commands during which no EXPUNGE/VANISHED may be sent (RFC 3501 7.4.1).
NO_EXPUNGE_DURING = frozenset({"FETCH", "STORE", "SEARCH", "SORT", "THREAD"})


class ImapSession(AppendCommands, MailboxCommands, SearchContextCommands, MessageCommands, NotifyCommands,
                  CompressCommand, ThreadCommands, Rev2Session, ScramCommands):
    def __init__(self, store: MailStore, accounts: Accounts, io: SessionIO, config: SessionConfig | None = None,
                 cache: ViewCache | None = None, tls_active: bool = False,
                 transcript: TranscriptRecorder | None = None, peer: str = "?",
                 clock: Callable[[], float] = time.monotonic,
                 throttle: LoginThrottle | None = None, user_sessions: UserSessions | None = None) -> None:
        """`throttle`: asked before each password check how long to wait first, and after each failed one how
        long to hold the answer and whether to hang up then (the adapter's ConnectionGuard; None: no limits).
        `user_sessions`: the server's count of logged-in sessions per user, and its cap (None: no cap)."""
        self._user_sessions = user_sessions
        self._counted_user: str | None = None  # the user this session is counted for in `user_sessions`
        self.store = store
        self.accounts = accounts
        self.io = io
        self.config = config or SessionConfig()
        self.cache = cache or ViewCache()
        self.tls_active = tls_active
        self.transcript = transcript
        self.label = transcript.new_session("imap") if transcript is not None else "imap"
        self.peer = peer
        # before login only small literals (a user name, a password): nobody unauthenticated may make us
        # accept 50 MiB
        self.framer = Framer(self.config.max_line, min(self.config.max_literal, PRE_AUTH_MAX_LITERAL))
        # the state (state.py); the data some states carry: the tag of IDLE (while IDLE) and of AUTHENTICATE
        # (while AUTHENTICATING), to answer when the next line ends them
        self._machine = StateMachine()
        self.user: str | None = None
        self.selected: SelectedMailbox | None = None
        self.condstore = False
        self.qresync = False
        self.idle_tag: str = ""
        self.auth_tag: str = ""
        self._out = bytearray()
        self._expunges_reported = False
        self._subscribed = False
        self._listener: Callable = self.on_store_event
        self.closed = False
        self._clock = clock
        self._input: deque[bytes] = deque()  # bytes fed but not framed yet (commands waiting their turn)
        self._events: Iterator[FrameEvent] | None = None  # the framer working through one of those chunks
        self._job: _Job | None = None  # the command running in steps
        self._output_paused = False
        self._push_due = False  # an idle push was asked of the adapter (SessionIO.wake) and has not run yet
        self._running = False
        self._record_skip = 0  # octets of a streamed literal the transcript has already summarised
        self._throttle = throttle
        #: A login step that waits for the hold to end (a penalty; SCRAM keys derived off the loop): (tag, step).
        self._auth_pending: tuple[str, Callable[[], None]] | None = None
        #: A hold (a failed login's answer, or credentials under penalty): no output, no command, until release_hold.
        self._auth_hold: FailureVerdict | None = None

    # -- I/O edges ------------------------------------------------------------------------------------------
    def greeting(self) -> None:
        caps = " ".join(self._capabilities())
        self._write(f"* OK [CAPABILITY {caps}] {self.config.name} IMAP4rev1 recall-lab ready.\r\n".encode())
        self._flush()

    def feed(self, data: bytes) -> None:
        """Bytes from the client: frame them and run complete commands, as far as output and time allow.

        Each command runs to its end before the framer reads the next one, so a pipelined LOGIN has raised the
        literal limit before the APPEND behind it is judged (and a refused literal is still never buffered).
        What cannot run now stays queued (see `runnable`); the adapter stops reading while anything is queued.
        """
        if self.closed:
            return
        if data:
            self._input.append(data)
        self._run()

    def proceed(self) -> None:
        """Go on with queued work (the adapter calls this, from its event loop, while `runnable`)."""
        if not self.closed:
            self._run()

    @property
    def runnable(self) -> bool:
        """Work is queued and nothing holds it back: call `proceed()` (soon, after other clients had a turn)."""
        return self.backlogged and not self._held

    @property
    def backlogged(self) -> bool:
        """A command is running in steps, or bytes wait to be framed: read no more from the client for now."""
        return not self.closed and (self._job is not None or self._events is not None or bool(self._input)
                                    or self._auth_hold is not None)

    @property
    def output_paused(self) -> bool:
        return self._output_paused

    def pause_output(self) -> None:
        """The transport holds more unsent output than it should (the client is not reading): stop running
        commands after the current step, until `resume_output`."""
        self._output_paused = True

    def resume_output(self) -> None:
        """The transport drained below its low-water mark: changes an idling client was not sent meanwhile go
        now; queued commands go on at the next `proceed()`."""
        self._output_paused = False
        if not self.closed and self.state is IDLE:
            self._idle_push()
        elif self._between_commands() and (self.notify_owed() or self.notify_pushes_selected()):
            self._notify_push()

    @property
    def _held(self) -> bool:
        return (self.closed or self.state in (LOGOUT, STARTTLS_PENDING) or self._output_paused
                or self._auth_hold is not None)

    def _run(self) -> None:
        """Run the current command's steps and the queued commands until none is left, output is over the mark
        or the time slice is spent; hand what was built to the transport."""
        if self._running:  # a store event reached us from inside a step: the outer run goes on
            return
        self._running = True
        try:
            slice_ = self.config.time_slice
            deadline = None if slice_ is None else self._clock() + slice_
            while not self._held:
                if self._job is not None:
                    if not self._steps(deadline):
                        break
                else:
                    event = self._next_event()
                    if event is None:
                        break
                    self._event(event)
                if len(self._out) >= FLUSH_AT:
                    self._flush()  # may tell us (pause_output) that the client is not reading
                if deadline is not None and self._clock() >= deadline:
                    break
        finally:
            self._running = False
        self._flush()

    def _steps(self, deadline: float | None) -> bool:
        """Run the current command's steps until it ends (True: go on with the queue), the output is over the
        mark or the slice is spent (False). A tight loop: FETCH 1:* takes a step per message."""
        job = self._job
        assert job is not None
        steps = job.steps
        out = self._out
        clock = self._clock
        try:
            while True:
                next(steps)
                if len(out) >= FLUSH_AT:
                    self._flush()
                    if self._output_paused or self.closed:
                        return False
                if deadline is not None and clock() >= deadline:
                    return False
                if self._job is not job:  # dropped under us (the connection ended during a step)
                    return False
        except StopIteration:
            pass
        except Exception as exc:  # noqa: BLE001 - mapped to the command's tagged reply, as in _command
            self._failed(job.tag, job.name, exc)
        if self._job is job:
            self._job = None
        return True

    def _next_event(self) -> FrameEvent | None:
        while True:
            if self._events is None:
                if not self._input:
                    return None
                self._events = self.framer.events(self._input.popleft())
            event = next(self._events, None)
            if event is not None:
                return event
            self._events = None

    def _event(self, event: FrameEvent) -> None:
        if isinstance(event, Command):
            before = getattr(self.io, "before_command", None)  # optional SessionIO hook: False ends the session
            if before is not None and not before():
                return
            self._record("C", b"********" if self.state is AUTHENTICATING else event.data)
            self._command(event.data)
        elif isinstance(event, Continue):
            self._write(b"+ Ready for literal data\r\n")
        elif isinstance(event, Refused):
            self._refused(event)

    def _drop_work(self) -> None:
        """Forget queued commands and the running one at once (connection gone, LOGOUT, STARTTLS)."""
        job, self._job = self._job, None
        if job is not None:
            try:
                job.steps.close()
            except ValueError:  # closed from inside its own step (the connection ended under it)
                pass
        self._events = None
        self._input.clear()

    @property
    def io_paused(self) -> bool:
        """True after STARTTLS: nothing more may be read until the handshake is done."""
        return self.state is STARTTLS_PENDING

    @property
    def state(self) -> SessionState:
        return self._machine.state

    def _transition(self, event: Event) -> SessionState:
        """The one way the state changes (state.TRANSITIONS lists the moves)."""
        return self._machine.handle(event)

    def tls_started(self) -> None:
        self._transition(Event.TLS_STARTED)
        self.tls_active = True

    def timeout(self, text: str = "Autologout; idle for too long") -> None:
        """The adapter's inactivity timer (or the pre-login budget) ran out."""
        self._auth_hold = None  # a held answer goes out before the BYE
        self._write(f"* BYE {text}\r\n".encode())
        self._flush()
        self.shutdown()
        self.io.close()

    def server_stopping(self) -> None:
        self._auth_hold = None
        self._write(b"* BYE Server shutting down\r\n")
        self._flush()
        self.shutdown()
        self.io.close()

    def shutdown(self) -> None:
        """Forget the store subscription and any queued or half-done command, with what it had built, and the
        pieces of a command still being framed (up to a whole literal); idempotent (called when the connection
        ends for any reason). At once, not when the session is collected: it and its connection refer to each
        other, and Python's cycle collector seldom runs a full pass in a process that holds a big store."""
        self.closed = True
        self._transition(Event.LOGOUT)
        self.notify_stop()
        self._drop_work()
        self.framer.reset()
        if self._counted_user is not None and self._user_sessions is not None:
            self._user_sessions.leave(self._counted_user)
            self._counted_user = None
        self._out.clear()
        if self._subscribed:
            self.store.unsubscribe(self._listener)
            self._subscribed = False
        self.selected = None

    def _write(self, data: bytes) -> None:
        self._out += data

    def _flush(self) -> None:
        if self._out and self._auth_hold is None:
            data = bytes(self._out)
            self._out.clear()
            self._record("S", data)
            self.io.write(data)

    def _record(self, direction: str, data: bytes) -> None:
        """Record protocol lines one by one, each literal as one block (the recorder abbreviates long ones).

        A literal streamed in pieces is recorded once, as `<N octets>`, when its header is written; the rest
        of its octets, in later writes, are skipped (`_record_skip`)."""
        if self.transcript is None:
            return
        pos = 0
        n = len(data)
        if direction == "S" and self._record_skip:
            pos = min(self._record_skip, n)
            self._record_skip -= pos
        while pos < n:
            m = _LITERAL_AT_EOL.search(data, pos)
            if m is None:
                chunk, pos = data[pos:], n
                for line in chunk.split(b"\r\n"):
                    if line:
                        self.transcript.record(self.label, direction, line)  # type: ignore[arg-type]
                break
            for line in data[pos:m.end()].split(b"\r\n"):
                if line:
                    self.transcript.record(self.label, direction, line)  # type: ignore[arg-type]
            size = int(m.group(1))
            literal = data[m.end():m.end() + size]
            if size > self.transcript.max_literal or len(literal) < size:
                literal = f"<{size} octets>".encode()
            self.transcript.record(self.label, direction, literal)  # type: ignore[arg-type]
            pos = m.end() + size
            if pos > n and direction == "S":
                self._record_skip = pos - n

    # -- store events ---------------------------------------------------------------------------------------
    def on_store_event(self, event) -> None:
        if self.closed or event.user != self.user:
            return
        if self.notify is not None and self.notify_event(event):
            self._push_soon()  # NOTIFY (notify.py): another mailbox changed
        sel = self.selected
        if sel is None:
            return
        if isinstance(event, MailboxDeleted) and event.mailbox == sel.name:
            self._write(b"* BYE Selected mailbox was deleted\r\n")
            self._flush()
            self.shutdown()
            self.io.close()
            return
        if isinstance(event, MailboxRenamed):
            if event.mailbox == sel.name:
                sel.name = event.new_name
            elif sel.name.startswith(event.mailbox + "/"):
                sel.name = event.new_name + sel.name[len(event.mailbox):]
            return
        if getattr(event, "mailbox", None) != sel.name:
            return
        if sel.on_event(event, own=event.origin is self, hold=self.notify_held_events()):
            return  # NOTIFY without SELECTED: the client does not want to hear of it (notify.py)
        self.search_contexts_note(event)  # CONTEXT=SEARCH (esearch.py)
        if self.state is not IDLE and self.notify_pushes_selected():
            self._push_soon()  # NOTIFY SELECTED: sent between commands too
        elif self.state is IDLE and not self._output_paused:
            # (while the client does not read, changes only accumulate in `sel`: resume_output sends them)
            wake = getattr(self.io, "wake", None)
            if wake is None:  # an I/O without an event loop (sans-I/O tests): at once
                self._idle_push()
            elif not self._push_due:
                # Once per turn of the loop, not once per change: a STORE over 2,000 messages seen by 1,000
                # idling sessions was 2 million writes (232 s, the loop held for seconds); now each idler
                # gets what changed during the other session's step in one write, after the step.
                self._push_due = True
                wake()

    def wake(self) -> None:
        """The adapter's answer to `SessionIO.wake`: send an idling client the changes of the last turn."""
        self._push_due = False
        if not self.closed and self.state is IDLE and not self._output_paused:
            self._idle_push()
        elif self._between_commands():
            self._notify_push()

    def _between_commands(self) -> bool:
        """No command runs or waits, nothing is held: a NOTIFY notification may go out now."""
        return (not self.closed and self.notify is not None and self.state in (AUTHENTICATED, SELECTED)
                and not self._running and not self.backlogged and not self._output_paused)

    def _push_soon(self) -> None:
        """Have what NOTIFY owes sent as soon as nothing else is being written (see `wake`)."""
        if self._output_paused or not (self.state is IDLE or self._between_commands()):
            return  # a running command's tagged reply, or resume_output, sends it
        wake = getattr(self.io, "wake", None)
        if wake is None:  # sans-I/O: at once
            self.wake()
        elif not self._push_due:
            self._push_due = True
            wake()

    def _notify_push(self) -> None:
        """Between commands, with NOTIFY: the other mailboxes' notifications and the selected one's changes."""
        self._notify_flush()
        if self.selected is not None and self.notify_pushes_selected():
            self._flush_updates(allow_expunge=self.notify_expunge_between_commands())
        self._flush()

    def _idle_push(self) -> None:
        """Send an idling client the changes it is owed."""
        self._notify_flush()
        sel = self.selected
        if sel is None:
            self._flush()
            return
        if self.qresync and sel.pending_expunge:
            # no tagged OK will follow soon: the new HIGHESTMODSEQ goes untagged (as Dovecot does)
            self._write(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % (sel.highestmodseq + MODSEQ_SHIFT))
        self._flush_updates(allow_expunge=True)
        self._expunges_reported = False
        self._flush()

    def _flush_updates(self, allow_expunge: bool) -> None:
        sel = self.selected
        if sel is None:
            return
        if self.rev2:  # RFC 9051: no \Recent; a rev2 session claims none, so rev1 sessions still get them
            def claim(uids):
                return set()
        elif sel.readonly:
            def claim(uids):
                return self.store.peek_recent(self.user, sel.name) & set(uids)
        else:
            def claim(uids):
                return self.store.claim_recent(self.user, sel.name, uids)
        if allow_expunge and sel.pending_expunge:
            self._expunges_reported = True
        new = [r.uid for r in sel.pending_new] if self.notify is not None else None
        sel.flush(self._out, allow_expunge, self.qresync, self.condstore, claim, self.search_context_removal(),
                  with_uid=self.rev2)
        self.search_context_updates(sel)  # ADDTO/REMOVEFROM of live search contexts (esearch.py)
        if new:
            self.notify_new_fetch(new)  # NOTIFY MessageNew's fetch attributes

    # -- commands -------------------------------------------------------------------------------------------
    def _refused(self, event: Refused) -> None:
        text = f"[{event.code}] {event.reason}" if event.code else event.reason
        if event.tag and self.state not in (IDLE, AUTHENTICATING):
            self._write(f"{event.tag} BAD {text}\r\n".encode())
        else:
            self._write(f"* BAD {text}\r\n".encode())

    def _command(self, data: bytes) -> None:
        if self.state is IDLE:
            self._idle_line(data)
            return
        if self.state is AUTHENTICATING:
            self._auth_line(data)
            return
        tag = tag_of(data)
        if tag is None:
            lone = tag_of(data + b" x")  # a tag alone on its line: answer it, as Dovecot does
            if lone is not None and len(lone) == len(data):
                self._write(f"{lone} BAD Missing command name\r\n".encode())
            else:
                self._write(b"* BAD Missing or invalid tag\r\n" if data.strip() else b"* BAD Empty command line\r\n")
            return
        lx = Lexer(data, len(tag) + 1, self.config.mailbox_names.max_length)
        if self.utf8_names:  # IMAP4rev2 / UTF8=ACCEPT: names in UTF-8, `$` (rev2.py)
            lx.utf8 = True
            lx.saved = self.saved_uids if self.rev2 else None
        name = ""
        try:
            name = lx.atom("command name").upper()
            method = COMMANDS.get(name)
            if method is None:
                raise ParseError(f"Unknown command {name[:30]}")
            if name not in ALLOWED[self.state]:
                raise ParseError(f"{name} is not valid in the {self.state} state")
            steps = getattr(self, method)(tag, lx)
            if steps is not None:  # parsed and checked; the work runs in steps (see the module docstring)
                self._job = _Job(tag, name, steps)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this command's tagged reply
            self._failed(tag, name, exc)

    def _text_line(self, line: str) -> bytes:
        """A response line whose text may hold a mailbox name or a client's words: UTF-8 once IMAP4rev2 is
        enabled (RFC 9051 appendix E, item 24), else 7-bit as IMAP4rev1's resp-text is (non-ASCII as \\x
        escapes)."""
        if self.rev2 or line.isascii():
            return line.encode()
        return line.encode("ascii", "backslashreplace")

    def _failed(self, tag: str, name: str, exc: Exception) -> None:
        """The tagged reply of a command that raised (while parsing, or in one of its steps)."""
        if isinstance(exc, ParseError):
            self._tagged_updates(name)
            self._write(self._text_line(f"{tag} BAD {exc.text}\r\n"))
        elif isinstance(exc, CommandFailed):
            self._tagged_updates(name)
            self._write(self._text_line(f"{tag} NO {exc.text}\r\n"))
        elif isinstance(exc, _NoSuchMailbox):
            self._tagged_updates(name)
            self._write(self._text_line(f"{tag} NO [NONEXISTENT] {_one_line(exc)}\r\n"))
        elif isinstance(exc, StoreError):
            self._tagged_updates(name)
            self._write(self._text_line(f"{tag} NO {_one_line(exc)}\r\n"))
        else:  # a bug must cost one command, never the connection
            log.error("IMAP %s: internal error in %s", self.peer, name or "?", exc_info=exc)
            self._write(f"{tag} NO [SERVERBUG] Internal error\r\n".encode())

    def _tagged_updates(self, name: str) -> None:
        self._notify_flush()  # NOTIFY: other mailboxes' notifications (cheap when none are owed)
        if self.state == SELECTED and self.selected is not None:
            self._flush_updates(allow_expunge=name not in NO_EXPUNGE_DURING)

    def ok(self, tag: str, text: str, name: str = "", updates: bool = True) -> None:
        """The tagged OK, preceded by the updates the client is owed."""
        if updates:
            self._tagged_updates(name)
        if self._expunges_reported and self.qresync and self.selected is not None and not text.startswith("["):
            # RFC 7162 3.2.10: after expunges, the mailbox's new HIGHESTMODSEQ (no FETCH carries it)
            text = f"[HIGHESTMODSEQ {self.selected.highestmodseq + MODSEQ_SHIFT}] {text}"
        self._expunges_reported = False
        self._write(self._text_line(f"{tag} OK {text}\r\n"))

    def _capabilities(self) -> list[str]:
        return capabilities(self.state in (AUTHENTICATED, SELECTED), self.config.tls_available,
                            self.tls_active, self.config.login_disabled_without_tls)

    def cmd_capability(self, tag: str, lx: Lexer) -> None:
        lx.end()
        self._write(f"* CAPABILITY {' '.join(self._capabilities())}\r\n".encode())
        self.ok(tag, "Capability completed.")

    def cmd_noop(self, tag: str, lx: Lexer) -> None:
        lx.end()
        self.ok(tag, "NOOP completed.")

    def cmd_logout(self, tag: str, lx: Lexer) -> None:
        lx.end()
        self._write(b"* BYE Logging out\r\n")
        self._write(f"{tag} OK Logout completed.\r\n".encode())
        self._flush()
        self.shutdown()
        self.io.close()

    def cmd_starttls(self, tag: str, lx: Lexer) -> None:
        lx.end()
        if not self.config.tls_available:
            raise ParseError("STARTTLS is not available here")
        if self.tls_active:
            raise ParseError("TLS is already active")
        self._write(f"{tag} OK Begin TLS negotiation now.\r\n".encode())
        self._flush()
        self.framer.reset()
        self._drop_work()  # what the client sent after STARTTLS in plaintext is never acted on (RFC 3501 6.2.1)
        self._transition(Event.STARTTLS)
        self.io.start_tls()

    def cmd_id(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        lx.value()  # NIL or a list of field/value pairs; we only answer
        lx.end()
        self._write(b'* ID ("name" "recall-lab" "vendor" "recall-lab" "support-url" "https://corp.example/")\r\n')
        self.ok(tag, "ID completed.")

    def cmd_enable(self, tag: str, lx: Lexer) -> None:
        names = []
        while lx.maybe_sp():
            names.append(lx.atom("capability").upper())
        if not names:
            raise ParseError("ENABLE needs a capability")
        enabled = []
        for name in names:
            if name in ENABLEABLE and name not in enabled:
                enabled.append(name)
        if "CONDSTORE" in enabled or "QRESYNC" in enabled:
            self.enable_condstore()
        if "QRESYNC" in enabled:
            self.qresync = True
        for name in enabled:
            self.enable_rev2(name)  # IMAP4rev2, UTF8=ACCEPT (rev2.py)
        self._write(("* ENABLED" + "".join(f" {SPELLING.get(n, n)}" for n in enabled) + "\r\n").encode())
        self.ok(tag, "Enabled.")

    def cmd_namespace(self, tag: str, lx: Lexer) -> None:
        lx.end()
        self._write(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
        self.ok(tag, "NAMESPACE completed.")

    # -- authentication -------------------------------------------------------------------------------------
    def _login_allowed(self) -> None:
        if self.config.login_disabled_without_tls and not self.tls_active:
            raise CommandFailed("Plaintext authentication is disabled until STARTTLS", "PRIVACYREQUIRED")

    def _logged_in(self, tag: str, user: str) -> None:
        counter = self._user_sessions
        if counter is not None:
            if not counter.enter(user):  # the password was right: not a failed login, no delay
                raise CommandFailed(f"Too many sessions of this user ({counter.limit}); log out of one first",
                                    "LIMIT")
            self._counted_user = user
        self.user = user
        self.framer.max_literal = self.config.max_literal
        self.store.ensure_user(user)
        self._transition(Event.LOGGED_IN)
        if not self._subscribed:
            self.store.subscribe(self._listener)
            self._subscribed = True
        caps = " ".join(self._capabilities())
        self.ok(tag, f"[CAPABILITY {caps}] Logged in", updates=False)

    def _authenticate(self, user: str, password: str) -> str:
        canonical = self.accounts.authenticate(user, password)
        if canonical is None:
            self._auth_failed()
            raise CommandFailed("Authentication failed: wrong user name or password", "AUTHENTICATIONFAILED")
        return canonical

    def _auth_failed(self) -> None:
        """A password was tested and was wrong: hold the answer (and everything after it) as the guard says.

        The NO still goes into the output buffer now; `_flush` keeps it there and `_run` runs nothing more until
        the adapter's timer calls `release_hold`. So one connection tests at most one password per delay,
        whatever it pipelines.
        """
        if self._throttle is None:
            return
        verdict = self._throttle.failed()
        self._auth_hold = verdict
        self.io.hold(verdict.delay)

    def _check_login(self, tag: str, authc: str, password: str, authz: str = "", waited: bool = False) -> None:
        """LOGIN and AUTHENTICATE PLAIN: check the password, after the penalty the client's address has earned.

        Under penalty the credentials wait in `_auth_pending` (and nothing else runs) until `release_hold`: a
        guesser who hangs up early learns nothing, since the password was not even checked yet."""
        wait = self._throttle.penalty() if self._throttle is not None and not waited else 0.0
        if wait > 0:
            self._auth_pending = (tag, lambda: self._check_login(tag, authc, password, authz, waited=True))
            self._auth_hold = FailureVerdict(wait, disconnect=False)
            self.io.hold(wait)
            return
        user = self._authenticate(authc, password)
        if authz and self.accounts.canonical(authz) != user:
            self._auth_failed()
            raise CommandFailed("Authorization identity differs from authentication identity",
                                "AUTHORIZATIONFAILED")
        self._logged_in(tag, user)

    def release_hold(self) -> None:
        """The hold is over: check the waiting credentials, or send the failed login's answer; then hang up or
        go on with queued commands."""
        verdict, self._auth_hold = self._auth_hold, None
        pending, self._auth_pending = self._auth_pending, None
        if verdict is None or self.closed:
            return
        if verdict.disconnect:
            self._write(b"* BYE Too many failed logins\r\n")
            self._flush()
            self.shutdown()
            self.io.close()
            return
        if pending is not None:
            tag, step = pending
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the login command's tagged reply, as in _command
                self._failed(tag, "LOGIN", exc)
        self._run()

    def cmd_login(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        user = lx.astring()
        lx.sp()
        password = lx.astring()
        lx.end()
        self._login_allowed()
        self._check_login(tag, user, password)

    def cmd_authenticate(self, tag: str, lx: Lexer) -> None:
        lx.sp()
        mech = lx.atom("mechanism").upper()
        initial = None
        if lx.maybe_sp():
            initial = lx.atom("initial response")
        lx.end()
        if mech not in ("PLAIN", SCRAM):
            raise CommandFailed(f"Unsupported authentication mechanism {mech[:20]}", "CANNOT")
        self._login_allowed()
        if mech == SCRAM:  # scram.py
            self.scram_start(tag, initial)
            return
        if initial is None:
            self.auth_tag = tag
            self._transition(Event.AUTH_CONTINUE)
            self._write(b"+ \r\n")
            return
        self._plain(tag, initial)

    def _auth_line(self, data: bytes) -> None:
        tag = self.auth_tag
        self._transition(Event.AUTH_RESPONSE)
        try:
            text = data.decode("ascii").strip()
            if text == "*":
                self.scram_end()
                raise ParseError("AUTHENTICATE cancelled")
            if self.scram_active:
                self.scram_line(tag, text)
            else:
                self._plain(tag, text)
        except UnicodeDecodeError:
            self.scram_end()
            self._write(f"{tag} BAD Invalid base64\r\n".encode())
        except ParseError as exc:
            self._write(f"{tag} BAD {exc.text}\r\n".encode())
        except CommandFailed as exc:
            self._write(f"{tag} NO {exc.text}\r\n".encode())

    def _plain(self, tag: str, b64: str) -> None:
        try:
            raw = b"" if b64 == "=" else base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ParseError("Invalid base64 in AUTHENTICATE PLAIN") from None
        parts = raw.split(b"\0")
        if len(parts) != 3:
            raise ParseError("AUTHENTICATE PLAIN wants authzid NUL authcid NUL password")
        authz, authc, password = (p.decode("utf-8", "replace") for p in parts)
        self._check_login(tag, authc, password, authz)

    # -- IDLE -----------------------------------------------------------------------------------------------
    def cmd_idle(self, tag: str, lx: Lexer) -> None:
        lx.end()
        self.idle_tag = tag
        self._transition(Event.IDLE)
        self._write(b"+ idling\r\n")
        self._flush_updates(allow_expunge=True)

    def _idle_line(self, data: bytes) -> None:
        tag = self.idle_tag
        self._transition(Event.DONE)
        if data.strip().upper() == b"DONE":
            self.ok(tag, "IDLE terminated.")
        else:
            self._write(f"{tag} BAD Expected DONE to end IDLE\r\n".encode())

    def enable_condstore(self) -> None:
        """CONDSTORE on, by ENABLE or by a command that uses it (RFC 7162 3.1): a selected mailbox's
        HIGHESTMODSEQ is then reported once, since the client has not seen it yet."""
        if self.condstore:
            return
        self.condstore = True
        if self.selected is not None:
            self._write(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % (self.selected.highestmodseq + MODSEQ_SHIFT))

    # -- selection helpers used by the mixins ---------------------------------------------------------------
    def deselect(self) -> None:
        self.selected = None
        self.forget_result()  # SEARCHRES `$` belongs to the selection (rev2.py)
        if self.state is SELECTED:
            self._transition(Event.DESELECTED)


def _one_line(exc: BaseException) -> str:
    text = str(exc).replace("\r", " ").replace("\n", " ").strip()
    return text or type(exc).__name__


__all__ = ["ImapSession", "SessionConfig", "SessionIO", "ImapError"]
