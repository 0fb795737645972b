"""Abuse limits shared by every listener of a lab: connection caps, a pre-login time budget, and a delay after
each failed login (sans-I/O: counters and decisions only, with the clock passed in).

Why one module for IMAP, MX and submission: the file descriptors a flood of idle sockets eats are the process's,
not one listener's, and a password guesser tries whichever port answers fastest. So one `ConnectionGuard` counts
the connections of every listener it is given (total, and per client address), decides who is refused, and
remembers failed logins per client address; the asyncio adapters only ask it and act (write the refusal, arm the
timers, sleep before answering). The rules, as Dovecot has them:

- Over the cap (total or per address) a new connection is told so (`* BYE [UNAVAILABLE]`, `421 4.7.0`) and closed
  at once: it never gets a session. The log gets one line when refusing starts and one when accepting resumes,
  not one per refused connection (an attacker must not be able to fill the disk either).
- A failed login is answered only after `auth_failure_delay` (Dovecot's auth_failure_delay); the connection
  reads nothing meanwhile, so one connection guesses at most one password per delay, and after
  `max_auth_failures` failures it is closed.
- That alone would not stop a guesser who opens many connections, or who hangs up when the answer does not come
  at once (a right password is answered at once, so silence means "wrong"). So once an address has
  `auth_penalty_after` recent failures (Dovecot's auth penalty), it waits before each further password is even
  checked, right or wrong: from `auth_failure_delay`, doubling with each failure, up to `auth_failure_delay_max`.
  Below that threshold a right password is answered at once, and no account is ever locked: the rightful user
  on a fresh connection logs in at once after a few typos, and within `auth_failure_delay_max` even from the
  address of an ongoing attack.
- A client that has not logged in (IMAP), authenticated or started a transaction (SMTP) within `login_timeout`
  seconds of connecting is disconnected, however often it sends a byte.

Since every connection of every listener passes through `admit` and `release`, the guard is also where they can be
watched (`watch`): `recall-lab serve -v` prints one line per connection opened, closed or refused. No watcher, no
cost; a watcher that raises is logged and does not affect the connection.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import logging
import math
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
#: File descriptors left for everything but client connections (listening sockets, relay connections, Maildir
#: files, logs, the interpreter's own).
RESERVED_FDS = 64
#: Never more client connections than this by default, whatever the fd limit: a lab is not a mail provider.
DEFAULT_CONNECTION_CEILING = 1000


def fd_limit() -> int | None:
    """The process's soft limit of open files, or None when unlimited or unknown."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY or soft <= 0 else soft


def default_max_connections(nofile: int | None) -> int:
    """A total connection cap that keeps the process clear of EMFILE.

    Half of what the fd limit leaves: a connection that a lab's own clients make in the same process (tests, the
    scenario engine, the recall agent) holds two of its descriptors, one at each end.
    """
    if nofile is None:
        return DEFAULT_CONNECTION_CEILING
    return max(8, min(DEFAULT_CONNECTION_CEILING, (nofile - RESERVED_FDS) // 2))


@dataclass(frozen=True)
class GuardLimits:
    """The knobs (see docs/configuration.md and docs/security.md); immutable, copied with `clone(**changes)`.

    `max_connections` / `max_connections_per_ip`: None derives them (from the fd limit; 3/4 of the total).
    Times are seconds; a `login_timeout` of 0 turns the pre-login budget off.
    """

    max_connections: int | None = None
    max_connections_per_ip: int | None = None
    login_timeout: float = 60.0
    auth_failure_delay: float = 2.0
    auth_failure_delay_max: float = 15.0
    max_auth_failures: int = 3
    auth_penalty_after: int = 10  # failures from one address after which its logins wait unchecked (0: never)
    failure_memory: float = 600.0  # how long an address's failed logins count towards the penalty
    smtp_command_timeout: float = 300.0  # aiosmtpd's wait for each command (RFC 5321 4.5.3.2.7: 5 minutes)
    episode_quiet: float = 10.0  # no refusal for this long ends a refusal episode (one log line each way)
    max_tracked_ips: int = 10000  # addresses remembered for failed logins (the oldest are forgotten first)
    nofile: int | None = field(default=None, compare=False, repr=False)  # fd limit to derive from (None: read it)
    #: The caps that were derived, not given: `clone` derives them again from the new values.
    derived: frozenset[str] = field(default=frozenset(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "derived", frozenset(
            name for name in ("max_connections", "max_connections_per_ip") if getattr(self, name) is None))
        total = self.max_connections
        if total is None:
            total = default_max_connections(self.nofile if self.nofile is not None else fd_limit())
        per_ip = self.max_connections_per_ip
        if per_ip is None:
            # most of it: a lab's own clients all come from 127.0.0.1 (a matrix run with -c 8 opens ~170
            # connections to one domain), yet a quarter stays free for everyone else
            per_ip = max(1, total * 3 // 4)
        checks = [
            ("max_connections", total >= 1, "at least 1"),
            ("max_connections_per_ip", per_ip >= 1, "at least 1"),
            ("login_timeout", self.login_timeout >= 0, "0 (off) or more seconds"),
            ("auth_failure_delay", self.auth_failure_delay >= 0, "0 or more seconds"),
            ("auth_failure_delay_max", self.auth_failure_delay_max >= 0, "0 or more seconds"),
            ("max_auth_failures", self.max_auth_failures >= 1, "at least 1"),
            ("auth_penalty_after", self.auth_penalty_after >= 0, "0 or more"),
            ("failure_memory", self.failure_memory >= 0, "0 or more seconds"),
            ("smtp_command_timeout", self.smtp_command_timeout > 0, "more than 0 seconds"),
            ("episode_quiet", self.episode_quiet >= 0, "0 or more seconds"),
            ("max_tracked_ips", self.max_tracked_ips >= 1, "at least 1"),
        ]
        for name, ok, rule in checks:
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ValueError(f"{name} must be {rule}")
        object.__setattr__(self, "max_connections", total)
        object.__setattr__(self, "max_connections_per_ip", min(per_ip, total))
        longest = max(self.auth_failure_delay_max, self.auth_failure_delay)
        object.__setattr__(self, "auth_failure_delay_max", longest)

    def clone(self, **changes: object) -> GuardLimits:
        """A copy with `changes`; a cap that was derived is derived again (from the new total, say)."""
        for name in self.derived:
            changes.setdefault(name, None)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def address_key(host: str) -> str:
    """What the per-address counters count by: the IPv4 address, or the IPv6 /64 (one customer's network)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host or "?"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def peer_host(peername: object) -> str:
    """The host part of a transport's `peername` extra info (a tuple for TCP, else whatever it is)."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername) if peername else "?"


def sock_address(sockname: object) -> str:
    """A transport's `peername` or `sockname` as `host:port` (`[v6]:port`), for people; "" when unknown."""
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host = str(sockname[0])
        return f"[{host}]:{sockname[1]}" if ":" in host else f"{host}:{sockname[1]}"
    return str(sockname) if sockname else ""


@dataclass(eq=False)
class Ticket:
    """One admitted connection: handed back to `release` when it ends, and to `auth_failed`."""

    key: str
    opened: float
    failures: int = 0
    released: bool = False
    where: str = ""  # the listener, as given to `admit` ("corp.example IMAP")
    peer: str = ""  # the client's host:port (its host when the listener did not say)
    local: str = ""  # the listener's host:port, when the listener said
    number: int = 0  # counts the guard's connections from 1: pairs an "opened" with its "closed"


@dataclass(frozen=True)
class Admission:
    """`ticket` None: refused, tell the client `reason`. `note`: a line for the log (None most of the time)."""

    ticket: Ticket | None
    reason: str = ""
    note: str | None = None


@dataclass(frozen=True)
class FailureVerdict:
    """After a failed login: answer only after `delay` seconds; then close the connection if `disconnect`."""

    delay: float
    disconnect: bool


@dataclass(frozen=True)
class LoginThrottle:
    """What a protocol session asks before and after checking a password (see ConnectionGuard.throttle)."""

    penalty: Callable[[], float]  # seconds to wait before checking the next password of this connection
    failed: Callable[[], FailureVerdict]  # a password was wrong: hold the answer how long, hang up after?


#: Told of each connection: ("opened" | "closed" | "refused", its ticket).
ConnectionWatcher = Callable[[str, Ticket], None]


@dataclass
class _Episode:
    started: float
    last: float
    refused: int = 0


class ConnectionGuard:
    """The counters and decisions of the module docstring, for every listener that shares this object."""

    def __init__(self, limits: GuardLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or GuardLimits()
        self.clock = clock
        self._total = 0
        self._per_key: dict[str, int] = {}
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._episode: _Episode | None = None
        self._watchers: list[ConnectionWatcher] = []
        self._numbers = itertools.count(1)

    @property
    def connections(self) -> int:
        return self._total

    def connections_from(self, host: str) -> int:
        return self._per_key.get(address_key(host), 0)

    # -- connections ------------------------------------------------------------------------------------
    def admit(self, host: str, where: str = "", *, peer: str = "", local: str = "") -> Admission:
        """A new connection from `host`: a ticket, or the refusal (and maybe the episode's first log line).
        `peer` and `local` (host:port of each end) only label the ticket for watchers."""
        admission = self._admit(host, where)
        if self._watchers:
            ticket = admission.ticket or Ticket(address_key(host), self.clock(), released=True)
            ticket.where, ticket.peer, ticket.local = where, peer or host, local
            ticket.number = next(self._numbers)
            self._tell("opened" if admission.ticket is not None else "refused", ticket)
        return admission

    def _admit(self, host: str, where: str) -> Admission:
        now = self.clock()
        key = address_key(host)
        lim = self.limits
        count = self._per_key.get(key, 0)
        place = f" to {where}" if where else ""
        if self._total >= lim.max_connections:  # type: ignore[operator]
            return self._refuse(now, "Too many connections, try again later",
                                f"refusing connections{place}: the cap of {lim.max_connections} connections "
                                "is reached")
        if count >= lim.max_connections_per_ip:  # type: ignore[operator]
            return self._refuse(now, "Too many connections from your address, try again later",
                                f"refusing connections{place} from {key}: the cap of "
                                f"{lim.max_connections_per_ip} connections per address is reached")
        note = None
        ep = self._episode
        if ep is not None and now - ep.last >= lim.episode_quiet:
            note = f"accepting connections again ({ep.refused} refused in {ep.last - ep.started:.0f} s)"
            self._episode = None
        self._total += 1
        self._per_key[key] = count + 1
        return Admission(Ticket(key, now), note=note)

    def _refuse(self, now: float, reason: str, note: str) -> Admission:
        ep = self._episode
        first = ep is None
        if ep is None:
            ep = self._episode = _Episode(started=now, last=now)
        ep.refused += 1
        ep.last = now
        return Admission(None, reason, note if first else None)

    def release(self, ticket: Ticket | None) -> None:
        """The connection ended (idempotent)."""
        if ticket is None or ticket.released:
            return
        ticket.released = True
        self._total -= 1
        left = self._per_key.get(ticket.key, 1) - 1
        if left > 0:
            self._per_key[ticket.key] = left
        else:
            self._per_key.pop(ticket.key, None)
        if self._watchers and ticket.number:
            self._tell("closed", ticket)

    def restart_budget(self, ticket: Ticket) -> None:
        """Start the time budget afresh: an unauthenticated session (MX) that delivered a message may send the
        next one, but it may not sit on its connection slot without delivering anything."""
        ticket.opened = self.clock()

    def login_time_left(self, ticket: Ticket) -> float | None:
        """Seconds of the pre-login budget left (at least 0), or None when there is no budget."""
        budget = self.limits.login_timeout
        if not budget:
            return None
        return max(0.0, ticket.opened + budget - self.clock())

    # -- watching connections -------------------------------------------------------------------------
    def watch(self, watcher: ConnectionWatcher) -> None:
        """Call `watcher(event, ticket)` for every connection "opened", "closed" or "refused" from now on (on the
        event loop's thread, synchronously: it must be quick). A refused connection's ticket is not counted."""
        self._watchers.append(watcher)

    def unwatch(self, watcher: ConnectionWatcher) -> None:
        """Unknown watchers are ignored."""
        try:
            self._watchers.remove(watcher)
        except ValueError:
            pass

    def _tell(self, event: str, ticket: Ticket) -> None:
        for watcher in tuple(self._watchers):
            try:
                watcher(event, ticket)
            except Exception:  # noqa: BLE001 - a watcher's bug must not refuse or keep a connection
                log.exception("connection watcher %r failed on %s", watcher, event)

    # -- failed logins ----------------------------------------------------------------------------------
    def auth_penalty(self, ticket: Ticket) -> float:
        """Seconds a login attempt on this connection must wait before its password is checked (0 mostly)."""
        lim = self.limits
        if not lim.auth_penalty_after:
            return 0.0
        excess = min(self.recent_failures_key(ticket.key) - lim.auth_penalty_after, 32)
        if excess < 0:
            return 0.0
        return min(lim.auth_failure_delay_max, lim.auth_failure_delay * 2 ** excess)

    def auth_failed(self, ticket: Ticket) -> FailureVerdict:
        """A wrong password (or unknown user) on this connection: how long to wait before answering, and
        whether to hang up after the answer."""
        now = self.clock()
        lim = self.limits
        ticket.failures += 1
        count = self.recent_failures_key(ticket.key) + 1
        self._failures.pop(ticket.key, None)
        self._failures[ticket.key] = (count, now)
        while len(self._failures) > lim.max_tracked_ips:
            self._failures.popitem(last=False)
        return FailureVerdict(lim.auth_failure_delay, ticket.failures >= lim.max_auth_failures)

    def throttle(self, ticket: Ticket) -> LoginThrottle:
        """The two questions a session asks about its logins, bound to its connection."""
        return LoginThrottle(penalty=lambda: self.auth_penalty(ticket), failed=lambda: self.auth_failed(ticket))

    def recent_failures(self, host: str) -> int:
        """Failed logins from this address that still count (the last within `failure_memory`)."""
        return self.recent_failures_key(address_key(host))

    def recent_failures_key(self, key: str) -> int:
        entry = self._failures.get(key)
        if entry is None or self.clock() - entry[1] > self.limits.failure_memory:
            return 0
        return entry[0]


class EpisodeGate:
    """Says whether to log a recurring error: yes for the first of an episode, which ends after `quiet` seconds
    without one. For errors the guard cannot prevent but must not let flood the log (accept() failing with
    EMFILE when something else ate the descriptors: asyncio reports every retry)."""

    def __init__(self, quiet: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet = quiet
        self.clock = clock
        self._last: float | None = None
        self.suppressed = 0

    def allow(self) -> bool:
        now = self.clock()
        first = self._last is None or now - self._last >= self.quiet
        self._last = now
        if first:
            self.suppressed = 0
        else:
            self.suppressed += 1
        return first


__all__ = ["Admission", "ConnectionGuard", "ConnectionWatcher", "EpisodeGate", "FailureVerdict", "GuardLimits",
           "LoginThrottle", "Ticket", "address_key", "default_max_connections", "fd_limit", "peer_host", "sock_address"]
