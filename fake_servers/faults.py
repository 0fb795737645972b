"""Deterministic fault injection for one domain: SMTP rejections, delays, dropped connections, relay outages
and IMAP disconnects, decided by rules and a random generator of the domain's own.

Why here, and why rules read by the servers: a test of "what does my code do when the provider says 450" needs
the provider to say 450 over a real socket, the same way every run. Each domain keeps one `FaultSet`; the SMTP
listener asks it when a connection opens, the handler's hooks (`handle_EHLO`, `handle_MAIL`, `handle_RCPT`,
`handle_DATA`) ask it before their own policy, and the IMAP server asks it before each command line. Nothing
is patched: adding or clearing a rule changes what the next question is answered, and nothing else. A seed
fixes the generator (`random.Random`, one per domain), so the same seed and the same traffic give the same
faults.

A rule is written as a spec string (the CLI's `--fault DOMAIN:SPEC`; `parse_spec`), as a TOML inline table with
the same keys, or as a `FaultRule`. The action is one of:

    mail=CODE / rcpt=CODE / data=CODE / ehlo=CODE / connect=CODE   reject at that stage (4xx or 5xx)
    delay=SECONDS (with at=ehlo|mail|rcpt|data, default mail)       wait before the reply
    drop=STAGE                                                      close the connection at that stage
    outage=T0-T1 (with mode=421|silent)                            the listener refuses (421) or never
                                                                    answers between T0 and T1 seconds;
                                                                    a session already open gets the 421
                                                                    (or loses its connection) at its
                                                                    next command
    imap-drop=N                                                     an IMAP connection is cut when its
                                                                    command line number N+1 arrives

and the options: `p=PROBABILITY` (default 1), `next=N` (fires at most N more times), `on=mx|submission|any`
(which SMTP listener; default any, mx for an outage), `status=X.Y.Z` and `text=...` (the reply's enhanced
status code and text). An outage's window is measured on the domain's clock from when the rule was added (the
lab's start for rules from its config or command line).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Stage = Literal["connect", "ehlo", "mail", "rcpt", "data"]
Listener = Literal["mx", "submission", "any"]
Kind = Literal["reject", "delay", "drop", "outage", "imap-drop"]

STAGES: tuple[str, ...] = ("connect", "ehlo", "mail", "rcpt", "data")
LISTENERS: tuple[str, ...] = ("mx", "submission", "any")
#: The keys of a rule, in a spec string or a TOML table.
ACTION_KEYS: tuple[str, ...] = (*STAGES, "delay", "drop", "outage", "imap-drop")
OPTION_KEYS: tuple[str, ...] = ("p", "next", "on", "at", "mode", "status", "text")

#: RFC 3463 codes given to an injected reply that names none.
_ENHANCED: dict[int, str] = {421: "4.3.2", 450: "4.2.1", 451: "4.3.0", 452: "4.3.1", 550: "5.7.1",
                             551: "5.1.6", 552: "5.3.4", 553: "5.1.3", 554: "5.7.1"}
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


class FaultSpecError(ValueError):
    """A fault rule that cannot work; the message is one line naming the bad part."""


@dataclass(frozen=True)
class FaultRule:
    """One rule (see the module docstring for what each field means)."""

    kind: Kind
    stage: Stage = "mail"  # reject, delay, drop: where; outage: always connect
    code: int = 0  # reject, outage with mode 421
    status: str = ""  # enhanced status code of the reply ("" : from the code)
    text: str = ""
    seconds: float = 0.0  # delay
    window: tuple[float, float] = (0.0, 0.0)  # outage: seconds after the rule was added
    silent: bool = False  # outage: accept the connection and never answer
    after: int = 0  # imap-drop: command lines allowed before the cut
    probability: float = 1.0
    next: int | None = None  # fires at most this many times (None: no limit)
    on: Listener = "any"

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise FaultSpecError(f"p={self.probability:g} is not a probability (0 to 1)")
        if self.next is not None and self.next < 0:
            raise FaultSpecError(f"next={self.next} must not be negative")
        if self.stage not in STAGES:
            raise FaultSpecError(f"unknown stage {self.stage!r} (stages: {', '.join(STAGES)})")
        if self.on not in LISTENERS:
            raise FaultSpecError(f"on={self.on} must be one of {', '.join(LISTENERS)}")
        if self.kind in ("reject", "outage") and not self.silent and not 400 <= self.code <= 599:
            raise FaultSpecError(f"reply code {self.code} is not a 4xx or 5xx code")
        if self.status and (not _STATUS.fullmatch(self.status) or self.status[0] != str(self.code)[0]):
            raise FaultSpecError(f"status={self.status} is not an enhanced status code of class {str(self.code)[0]}")
        if any(ord(c) < 32 for c in self.text):
            raise FaultSpecError("text= must be one line of printable characters")
        if self.kind == "delay" and (self.seconds < 0 or self.stage == "connect"):
            raise FaultSpecError("delay= needs seconds >= 0 at ehlo, mail, rcpt or data")
        if self.kind == "outage" and not 0 <= self.window[0] < self.window[1]:
            raise FaultSpecError(f"outage={self.window[0]:g}-{self.window[1]:g} needs 0 <= T0 < T1")
        if self.kind == "imap-drop" and self.after < 0:
            raise FaultSpecError("imap-drop=N needs N >= 0")

    def reply(self) -> str:
        """The SMTP reply line this rule injects."""
        status = self.status or _ENHANCED.get(self.code, f"{str(self.code)[0]}.0.0")
        text = self.text or ("Service temporarily unavailable (injected fault)" if self.code < 500
                             else "Refused (injected fault)")
        return f"{self.code} {status} {text}"

    def spec(self) -> str:
        """The rule as a spec string (what `parse_spec` reads back)."""
        if self.kind == "reject":
            parts = [f"{self.stage}={self.code}"]
        elif self.kind == "delay":
            parts = [f"delay={self.seconds:g}", f"at={self.stage}"]
        elif self.kind == "drop":
            parts = [f"drop={self.stage}"]
        elif self.kind == "outage":
            parts = [f"outage={self.window[0]:g}-{self.window[1]:g}",
                     "mode=silent" if self.silent else f"mode={self.code}"]
        else:
            parts = [f"imap-drop={self.after}"]
        if self.probability != 1.0:
            parts.append(f"p={self.probability:g}")
        if self.next is not None:
            parts.append(f"next={self.next}")
        if self.on != ("mx" if self.kind == "outage" else "any"):
            parts.append(f"on={self.on}")
        if self.status:
            parts.append(f"status={self.status}")
        if self.text:
            parts.append(f"text={self.text}")
        return ":".join(parts)


@dataclass(frozen=True)
class SmtpDecision:
    """What the SMTP side does at a stage: wait `delay` seconds, then reply `reply`, or drop (None: go on)."""

    delay: float = 0.0
    reply: str | None = None
    drop: bool = False
    silent: bool = False  # connect only: accept and never answer (an outage in mode silent)

    @property
    def acts(self) -> bool:
        return bool(self.delay or self.reply or self.drop or self.silent)


NO_FAULT = SmtpDecision()


@dataclass
class Fired:
    """One fault that fired (tests and the activity feed read these)."""

    rule: str
    where: str  # "mx:rcpt", "submission:connect", "imap"
    action: str  # "reject 450", "delay 2", "drop", "outage 421", "outage silent", "imap-drop"


@dataclass
class _Active:
    rule: FaultRule
    origin: float  # the domain's clock when the rule was added
    left: int | None = field(default=None)


def _number(key: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        raise FaultSpecError(f"{key}= must be a number, not {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise FaultSpecError(f"{key}= must be {'a whole number' if kind is int else 'a number'}, "
                             f"not {value!r}") from None


def rule_from_mapping(table: Mapping[str, Any]) -> FaultRule:
    """A rule from its keys (a TOML inline table, or a parsed spec string): exactly one action key."""
    table = {str(k).strip().lower(): v for k, v in table.items()}
    unknown = [k for k in table if k not in ACTION_KEYS and k not in OPTION_KEYS]
    if unknown:
        raise FaultSpecError(f"unknown key {unknown[0]!r} (actions: {', '.join(ACTION_KEYS)}; options: "
                             f"{', '.join(OPTION_KEYS)})")
    actions = [k for k in table if k in ACTION_KEYS]
    if len(actions) != 1:
        raise FaultSpecError(f"a rule needs exactly one action ({', '.join(ACTION_KEYS)}), got "
                             f"{', '.join(actions) or 'none'}")
    action = actions[0]
    value = table[action]
    kw: dict[str, Any] = {}
    if "p" in table:
        kw["probability"] = _number("p", table["p"], float)
    if "next" in table:
        kw["next"] = _number("next", table["next"], int)
    if "status" in table:
        kw["status"] = str(table["status"])
    if "text" in table:
        kw["text"] = str(table["text"])
    on = str(table.get("on", "mx" if action == "outage" else "any")).lower()
    kw["on"] = on
    for key in ("at", "mode"):
        if key in table and not (key == "at" and action == "delay" or key == "mode" and action == "outage"):
            raise FaultSpecError(f"{key}= does not apply to {action}=")
    if action in STAGES:
        return FaultRule("reject", stage=action, code=_number(action, value, int), **kw)  # type: ignore[arg-type]
    if action == "delay":
        return FaultRule("delay", stage=str(table.get("at", "mail")).lower(),  # type: ignore[arg-type]
                         seconds=_number("delay", value, float), **kw)
    if action == "drop":
        return FaultRule("drop", stage=str(value).lower(), **kw)  # type: ignore[arg-type]
    if action == "outage":
        start, sep, end = str(value).partition("-")
        if not sep:
            raise FaultSpecError(f"outage={value} must be T0-T1 (seconds after the rule is added)")
        mode = str(table.get("mode", "421")).lower()
        silent = mode == "silent"
        code = 0 if silent else _number("mode", mode, int)
        return FaultRule("outage", stage="connect", code=code, silent=silent,
                         window=(_number("outage", start, float), _number("outage", end, float)), **kw)
    return FaultRule("imap-drop", after=_number("imap-drop", value, int), **kw)


def parse_rule(spec: str) -> FaultRule:
    """A rule from a spec string without its domain ("rcpt=450:next=3")."""
    table: dict[str, str] = {}
    for part in spec.split(":"):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise FaultSpecError(f"{part!r} is not KEY=VALUE")
        if key in table:
            raise FaultSpecError(f"{key}= is given twice")
        table[key] = value.strip()
    return rule_from_mapping(table)


def parse_spec(spec: str) -> tuple[str, FaultRule]:
    """`DOMAIN:SPEC` (the CLI's --fault) -> (domain, rule); FaultSpecError says what is wrong, in one line."""
    domain, sep, rest = spec.strip().partition(":")
    if not sep or not domain or "=" in domain:
        raise FaultSpecError(f"{spec!r} must be DOMAIN:ACTION=VALUE[:OPTION=VALUE...], e.g. mail.example:rcpt=450")
    try:
        return domain.lower(), parse_rule(rest)
    except FaultSpecError as exc:
        raise FaultSpecError(f"{spec!r}: {exc}") from None


def as_rule(rule: FaultRule | str | Mapping[str, Any]) -> FaultRule:
    if isinstance(rule, FaultRule):
        return rule
    if isinstance(rule, str):
        return parse_rule(rule)
    if isinstance(rule, Mapping):
        return rule_from_mapping(rule)
    raise FaultSpecError(f"a fault rule is a spec string, a table or a FaultRule, not {type(rule).__name__}")


class FaultSet:
    """The fault rules of one domain and its random generator; the servers ask, tests add and clear.

    Thread-safe for `add`/`clear` from a test's thread (a BlockingLab); the servers ask from the loop.
    """

    def __init__(self, domain: str, *, seed: int | str = 0, rules: Iterable[FaultRule | str | Mapping] = (),
                 clock: Callable[[], float] = time.monotonic,
                 on_fire: Callable[[Fired], None] | None = None) -> None:
        self.domain = domain
        self.clock = clock
        self._seed = seed
        self._random = random.Random(f"{seed}:{domain}")
        self._rules: list[_Active] = []
        self._lock = threading.Lock()
        self._on_fire = on_fire
        #: Every fault that fired, in order (the determinism tests compare these).
        self.fired: list[Fired] = []
        for rule in rules:
            self.add(rule)

    # -- what tests and the CLI do ----------------------------------------------------------------------
    def add(self, rule: FaultRule | str | Mapping[str, Any], **changes: Any) -> FaultRule:
        """Add a rule (a FaultRule, a spec string or a table); `changes` replace its fields
        (`add("rcpt=450", next=3)`). Its outage window starts now, on the domain's clock."""
        parsed = as_rule(rule)
        if changes:
            try:
                parsed = replace(parsed, **changes)
            except TypeError as exc:
                raise FaultSpecError(str(exc)) from None
        with self._lock:
            self._rules.append(_Active(parsed, self.clock(), parsed.next))
        return parsed

    def clear(self) -> None:
        """Remove every rule (what fired stays in `fired`)."""
        with self._lock:
            self._rules.clear()

    def seed(self, seed: int | str) -> None:
        """Start the generator again from `seed` (the same seed, the same sequence)."""
        with self._lock:
            self._seed = seed
            self._random = random.Random(f"{seed}:{self.domain}")

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [a.rule for a in self._rules]

    def __bool__(self) -> bool:
        return bool(self._rules)

    # -- what the servers ask ---------------------------------------------------------------------------
    def smtp(self, listener: str, stage: str) -> SmtpDecision:
        """What the `listener` ("mx" or "submission") does at `stage`: the sum of the delays of the rules that
        fire, then the first reject, drop or outage that fires (rules in the order they were added)."""
        if not self._rules:
            return NO_FAULT
        delay = 0.0
        with self._lock:
            for active in list(self._rules):
                rule = active.rule
                if rule.kind == "imap-drop" or rule.on not in ("any", listener):
                    continue
                if rule.stage != stage and rule.kind != "outage":  # an outage holds at every stage
                    continue
                if rule.kind == "outage":
                    now = self.clock() - active.origin
                    if not rule.window[0] <= now < rule.window[1]:
                        continue
                if not self._fires(active):
                    continue
                where = f"{listener}:{stage}"
                if rule.kind == "delay":
                    delay += rule.seconds
                    self._record(rule, where, f"delay {rule.seconds:g}")
                    continue
                if rule.kind == "drop":
                    self._record(rule, where, "drop")
                    return SmtpDecision(delay=delay, drop=True)
                if rule.kind == "outage" and rule.silent:
                    self._record(rule, where, "outage silent")
                    if stage != "connect":  # a session open before the outage: its connection dies
                        return SmtpDecision(delay=delay, drop=True)
                    return SmtpDecision(delay=delay, silent=True)
                self._record(rule, where, f"{rule.kind} {rule.code}")
                return SmtpDecision(delay=delay, reply=rule.reply())
        return SmtpDecision(delay=delay) if delay else NO_FAULT

    def imap_command(self, count: int) -> bool:
        """Whether an IMAP connection is cut as its command line number `count` (from 1) arrives."""
        if not self._rules:
            return False
        with self._lock:
            for active in list(self._rules):
                rule = active.rule
                if rule.kind != "imap-drop" or count <= rule.after:
                    continue
                if self._fires(active):
                    self._record(rule, "imap", "imap-drop")
                    return True
        return False

    # -- internals ----------------------------------------------------------------------------------------
    def _fires(self, active: _Active) -> bool:
        """Spent rules never fire; a rule with p < 1 draws from the generator (only then, so a rule with p = 1
        leaves the sequence of the others unchanged)."""
        if active.left is not None and active.left <= 0:
            return False
        if active.rule.probability < 1.0 and self._random.random() >= active.rule.probability:
            return False
        if active.left is not None:
            active.left -= 1
        return True

    def _record(self, rule: FaultRule, where: str, action: str) -> None:
        fired = Fired(rule.spec(), where, action)
        self.fired.append(fired)
        if self._on_fire is not None:
            self._on_fire(fired)


__all__ = ["FaultRule", "FaultSet", "FaultSpecError", "Fired", "NO_FAULT", "SmtpDecision", "as_rule", "parse_rule",
           "parse_spec", "rule_from_mapping"]
