"""A lab's configuration: its domains, their roles, users, passwords and policies (TOML or Python objects).

Why one small data model: the Lab, the CLI, scenarios and tests all describe labs; a TOML file and the Python
objects are two spellings of the same thing (`load_config` parses the one into the other, `to_dict` goes back).

TOML shape (every key but the domain tables is optional):

    policy_modules = ["my_policies"]        # modules imported so their register_policy calls run
    [relay]
    retry_delays = [1, 5, 30, 120]          # seconds between attempts after a 4xx / connection failure
    [limits]                                # abuse limits of every listener (recall_lab.fake_servers.guard.GuardLimits)
    max_connections = 300                   # in all, every listener (default: from the open-files limit)
    max_connections_per_ip = 150            # from one client address (default: 3/4 of max_connections)
    login_timeout = 60                      # seconds from connect to login / AUTH / MAIL (0: none)
    auth_failure_delay = 2                  # seconds before a wrong password is answered
    max_auth_failures = 3                   # failed logins before the connection is closed
    auth_penalty_after = 10                 # failures from one address after which each login waits unchecked
    auth_failure_delay_max = 15             # that wait doubles from auth_failure_delay, up to this
    smtp_command_timeout = 300              # seconds SMTP waits for each command
    [capture]                               # capture mode: SMTP that takes any mail, IMAP to read it
    enabled = true                          # (the table's presence turns it on; false turns it off)
    password = "s3cret"                     # the IMAP password of every address (default: any password)
    max_messages = 1000                     # kept in all; past it (or max_bytes) the oldest are dropped
    max_bytes = 104857600
    max_addresses = 1000                    # recipients with a mailbox; past it new ones get 452
    max_message_size = 10485760
    [routes]                                # extra relay routes to servers outside the lab
    "partner.example" = "127.0.0.1:2525"
    [domains."corp.example"]
    role = "organisation"                   # or "external"
    users = ["alice", "bob"]                # local parts: password "<local>-password" ...
    pipeline = ["recall"]                   # optional: explicit policy order (else the role's defaults)
    max_message_size = 10485760
    [domains."corp.example".passwords]      # ... or explicit passwords (full address or local part)
    "alice@corp.example" = "s3cret"
    [domains."corp.example".policies]       # free-form; handed to every policy of the domain
    recall_mode = "cloud"
    [domains."mail.example".faults]         # injected faults (docs/faults.md)
    seed = 1                                # the domain's generator: same seed, same faults
    rules = ["rcpt=450:next=3", { outage = "0-60", mode = "421" }]
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recall_lab.fake_servers.capture import CaptureSettings
from recall_lab.fake_servers.guard import GuardLimits

Role = Literal["organisation", "external"]
ROLES: tuple[str, ...] = ("organisation", "external")

#: Default SIZE limit of the SMTP listeners (octets).
DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024
#: Default pauses between relay attempts after a temporary failure; after the last, the sender gets a DSN.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)
#: The [limits] keys a lab config may set: name -> whether it is a count (else seconds).
LIMIT_KEYS: dict[str, bool] = {
    "max_connections": True,
    "max_connections_per_ip": True,
    "login_timeout": False,
    "auth_failure_delay": False,
    "auth_failure_delay_max": False,
    "max_auth_failures": True,
    "auth_penalty_after": True,
    "smtp_command_timeout": False,
}


class ConfigError(ValueError):
    """A lab configuration that cannot work; the message is one line fit for the CLI.

    `key`: the path of the offending key (["domains", "corp.example", "policies", "recall_mod"]) when there is
    one, so that `load_config` can name its line in the file."""

    def __init__(self, message: str, key: list[str] | None = None) -> None:
        super().__init__(message)
        self.key = key


#: The keys each table of a lab config may have (anything else is an error naming the key and these).
TOP_KEYS = ("policy_modules", "relay", "routes", "limits", "capture", "domains")
CAPTURE_KEYS = ("enabled", "password", "max_messages", "max_bytes", "max_addresses", "max_message_size")
RELAY_KEYS = ("retry_delays",)
DOMAIN_KEYS = ("role", "users", "passwords", "policies", "pipeline", "max_message_size", "faults", "backend")
#: Who keeps a domain's mailboxes and serves its IMAP: the lab's own store and server, or a private Dovecot
#: the lab starts (delivery over LMTP, policies over IMAP as a master user; docs/dovecot-backend.md).
BACKENDS = ("lab", "dovecot")
FAULT_KEYS = ("seed", "rules")


def _check_keys(table: Mapping[str, Any], allowed: Iterable[str], path: list[str]) -> None:
    allowed = list(allowed)
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            where = ".".join([*path, str(key)])
            raise ConfigError(f"unknown key {where}{hint}; allowed here: {', '.join(allowed)}",
                              key=[*path, str(key)])


def default_password(address: str) -> str:
    return f"{address.partition('@')[0]}-password"


@dataclass
class DomainConfig:
    """One mail domain of the lab: one server (IMAP, submission, MX) over one store."""

    name: str
    role: Role = "external"
    users: dict[str, str] = field(default_factory=dict)  # full address -> password
    policies: dict[str, Any] = field(default_factory=dict)  # free-form settings for the domain's policies
    pipeline: list[str] | None = None  # explicit policy order; None: the registered defaults for the role
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Injected faults: rules (spec strings, tables or FaultRule) and the seed of the domain's generator.
    faults: list[Any] = field(default_factory=list)
    fault_seed: int = 0
    backend: str = "lab"  # one of BACKENDS

    def __post_init__(self) -> None:
        self.name = self.name.strip().lower()
        if self.backend not in BACKENDS:
            raise ConfigError(f"domain {self.name}: backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if not self.name or "@" in self.name or " " in self.name:
            raise ConfigError(f"bad domain name {self.name!r}")
        if self.role not in ROLES:
            raise ConfigError(f"domain {self.name}: role must be one of {', '.join(ROLES)}, not {self.role!r}")
        users: dict[str, str] = {}
        for user, password in self.users.items():
            address = user.strip().lower()
            if "@" not in address:
                address = f"{address}@{self.name}"
            if address.rpartition("@")[2] != self.name:
                raise ConfigError(f"user {address} does not belong to domain {self.name}")
            users[address] = password
        self.users = users

    @classmethod
    def with_users(cls, name: str, role: Role, locals_: Iterable[str], **kw: Any) -> DomainConfig:
        """A domain whose users get the default password "<local>-password"."""
        users = {f"{lp}@{name}": f"{lp}-password" for lp in locals_}
        return cls(name=name, role=role, users=users, **kw)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "passwords": dict(self.users),
                               "policies": dict(self.policies), "max_message_size": self.max_message_size}
        if self.pipeline is not None:
            out["pipeline"] = list(self.pipeline)
        if self.backend != "lab":
            out["backend"] = self.backend
        if self.faults or self.fault_seed:
            from recall_lab.fake_servers.faults import as_rule

            out["faults"] = {"seed": self.fault_seed, "rules": [as_rule(r).spec() for r in self.faults]}
        return out


@dataclass
class LabConfig:
    """A whole lab: its domains (order matters for --port-base), relay settings, extra routes."""

    domains: list[DomainConfig]
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    routes: dict[str, str] = field(default_factory=dict)  # domain -> "host:port" outside the lab
    policy_modules: list[str] = field(default_factory=list)
    limits: GuardLimits = field(default_factory=GuardLimits)  # connection caps, login throttling ([limits])
    capture: CaptureSettings | None = None  # capture mode ([capture]); None: off

    def __post_init__(self) -> None:
        names = [d.name for d in self.domains]
        if not names:
            raise ConfigError("a lab needs at least one domain")
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"domain {sorted(dupes)[0]} is configured twice")
        self.retry_delays = tuple(float(x) for x in self.retry_delays)
        if any(x < 0 for x in self.retry_delays):
            raise ConfigError("relay retry delays must not be negative")

    def domain(self, name: str) -> DomainConfig:
        for d in self.domains:
            if d.name == name.lower():
                return d
        raise KeyError(name)

    def set_backends(self, choices: Mapping[str, str]) -> None:
        """`--backend DOMAIN=KIND` given on a command line: ConfigError naming the domain or kind that is wrong."""
        for name, kind in choices.items():
            try:
                domain = self.domain(name)
            except KeyError:
                raise ConfigError(f"--backend {name}={kind}: no domain {name} in this lab "
                                  f"(has: {', '.join(d.name for d in self.domains)})") from None
            if kind not in BACKENDS:
                raise ConfigError(f"--backend {name}={kind}: the kind must be one of {', '.join(BACKENDS)}")
            domain.backend = kind


    def to_dict(self) -> dict[str, Any]:
        defaults = GuardLimits()
        limits = {key: getattr(self.limits, key) for key in LIMIT_KEYS  # what was set, not what was derived
                  if key not in self.limits.derived and (key.startswith("max_connections")
                                                         or getattr(self.limits, key) != getattr(defaults, key))}
        return {
            "policy_modules": list(self.policy_modules),
            "relay": {"retry_delays": list(self.retry_delays)},
            "routes": dict(self.routes),
            "limits": limits,
            **({"capture": _capture_to_dict(self.capture)} if self.capture is not None else {}),
            "domains": {d.name: d.to_dict() for d in self.domains},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabConfig:
        _check_keys(data, TOP_KEYS, [])
        domains_table = data.get("domains")
        if not isinstance(domains_table, Mapping) or not domains_table:
            raise ConfigError("the config has no [domains.\"...\"] tables")
        domains = [_domain_from_dict(name, table) for name, table in domains_table.items()]
        relay = data.get("relay", {}) or {}
        if not isinstance(relay, Mapping):
            raise ConfigError("[relay] must be a table")
        _check_keys(relay, RELAY_KEYS, ["relay"])
        kw: dict[str, Any] = {}
        if "retry_delays" in relay:
            delays = relay["retry_delays"]
            if not isinstance(delays, list) or not all(isinstance(x, int | float) for x in delays):
                raise ConfigError("relay.retry_delays must be a list of numbers (seconds)")
            kw["retry_delays"] = tuple(delays)
        routes = data.get("routes", {}) or {}
        if not isinstance(routes, Mapping):
            raise ConfigError("[routes] must be a table of domain = \"host:port\"")
        for domain, target in routes.items():
            _split_hostport(str(target), f"route for {domain}")
        modules = data.get("policy_modules", []) or []
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise ConfigError("policy_modules must be a list of module names")
        kw["limits"] = limits_from_dict(data.get("limits", {}) or {})
        if "capture" in data:
            kw["capture"] = capture_from_dict(data["capture"])
        config = cls(domains=domains, routes={str(k).lower(): str(v) for k, v in routes.items()},
                     policy_modules=list(modules), **kw)
        check_policy_settings(config)
        return config


def parse_backend_options(values: Iterable[str]) -> dict[str, str]:
    """`corp.example=dovecot` (repeatable) -> {"corp.example": "dovecot"}; ConfigError for a malformed one."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, kind = value.partition("=")
        if not sep or not name.strip() or not kind.strip():
            raise ConfigError(f"--backend {value}: use DOMAIN=KIND, e.g. corp.example=dovecot")
        out[name.strip().lower()] = kind.strip().lower()
    return out


def limits_from_dict(table: Any, base: GuardLimits | None = None) -> GuardLimits:
    """GuardLimits from a [limits] table (or CLI flags), on top of `base`; ConfigError names the bad key."""
    if not isinstance(table, Mapping):
        raise ConfigError("[limits] must be a table")
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key not in LIMIT_KEYS:
            raise ConfigError(f"limits.{key} is not a known limit (known: {', '.join(LIMIT_KEYS)})",
                              key=["limits", str(key)])
        count = LIMIT_KEYS[key]
        ok_type = isinstance(value, int) if count else isinstance(value, int | float)
        if not ok_type or isinstance(value, bool):
            raise ConfigError(f"limits.{key} must be {'a whole number' if count else 'a number of seconds'}")
        changes[key] = value if count else float(value)
    base = base or GuardLimits()
    try:
        return base.clone(**changes)
    except ValueError as exc:
        raise ConfigError(f"limits.{exc}") from None


def capture_from_dict(table: Any) -> CaptureSettings | None:
    """CaptureSettings from a [capture] table (None when it says `enabled = false`); ConfigError names the key.
    The table's presence turns capture mode on; every key is optional."""
    if not isinstance(table, Mapping):
        raise ConfigError("[capture] must be a table", key=["capture"])
    _check_keys(table, CAPTURE_KEYS, ["capture"])
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("capture.enabled must be true or false", key=["capture", "enabled"])
    password = table.get("password")
    if password is not None and (not isinstance(password, str) or not password):
        raise ConfigError("capture.password must be a non-empty string (leave it out to accept any password)",
                          key=["capture", "password"])
    sizes: dict[str, int] = {}
    for key in CAPTURE_KEYS[2:]:
        if key in table:
            value = table[key]
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"capture.{key} must be a positive whole number", key=["capture", key])
            sizes[key] = value
    try:
        settings = CaptureSettings(password=password, **sizes)
    except ValueError as exc:
        raise ConfigError(f"capture: {exc}", key=["capture"]) from None
    return settings if enabled else None


def _capture_to_dict(settings: CaptureSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"enabled": True}
    if settings.password is not None:
        out["password"] = settings.password
    out.update({key: getattr(settings, key) for key in CAPTURE_KEYS[2:]})
    return out


def _domain_from_dict(name: str, table: Any) -> DomainConfig:
    if not isinstance(table, Mapping):
        raise ConfigError(f"domains.{name} must be a table", key=["domains", name])
    _check_keys(table, DOMAIN_KEYS, ["domains", name])
    users: dict[str, str] = {}
    raw_users = table.get("users", [])
    at = ["domains", name, "users"]
    if isinstance(raw_users, Mapping):
        if not all(isinstance(v, str) for v in raw_users.values()):
            raise ConfigError(f"domains.{name}.users: each password must be a string", key=at)
        users.update({str(k): v for k, v in raw_users.items()})
    elif isinstance(raw_users, list):
        if not all(isinstance(lp, str) and lp.strip() for lp in raw_users):
            raise ConfigError(f"domains.{name}.users must be a list of names (strings)", key=at)
        for lp in raw_users:
            address = lp if "@" in lp else f"{lp}@{name}"
            users[address] = default_password(address)
    else:
        raise ConfigError(f"domains.{name}.users must be a list of names or a table of passwords", key=at)
    passwords = table.get("passwords", {}) or {}
    if not isinstance(passwords, Mapping) or not all(isinstance(v, str) for v in passwords.values()):
        raise ConfigError(f"domains.{name}.passwords must be a table of address = \"password\"",
                          key=["domains", name, "passwords"])
    users.update({str(k): str(v) for k, v in passwords.items()})
    policies = table.get("policies", {}) or {}
    if not isinstance(policies, Mapping):
        raise ConfigError(f"domains.{name}.policies must be a table", key=["domains", name, "policies"])
    pipeline = table.get("pipeline")
    if pipeline is not None and (not isinstance(pipeline, list) or not all(isinstance(p, str) for p in pipeline)):
        raise ConfigError(f"domains.{name}.pipeline must be a list of policy names")
    size = table.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
    if not isinstance(size, int) or size <= 0:
        raise ConfigError(f"domains.{name}.max_message_size must be a positive integer")
    rules, seed = _faults_from_dict(name, table.get("faults", {}))
    backend = table.get("backend", "lab")
    if backend not in BACKENDS:
        raise ConfigError(f"domains.{name}.backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}",
                          key=["domains", name, "backend"])
    return DomainConfig(name=name, role=table.get("role", "external"), users=users, policies=dict(policies),
                        pipeline=pipeline, max_message_size=size, faults=rules, fault_seed=seed, backend=backend)


def _faults_from_dict(name: str, table: Any) -> tuple[list[Any], int]:
    """A domain's [faults] table: `seed` (a whole number) and `rules` (spec strings or inline tables), each rule
    checked here so that a bad one names its place."""
    from recall_lab.fake_servers.faults import FaultSpecError, as_rule

    at = ["domains", name, "faults"]
    if not isinstance(table, Mapping):
        raise ConfigError(f"domains.{name}.faults must be a table with seed and rules", key=at)
    _check_keys(table, FAULT_KEYS, at)
    seed = table.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"domains.{name}.faults.seed must be a whole number", key=[*at, "seed"])
    rules = table.get("rules", [])
    if not isinstance(rules, list):
        raise ConfigError(f"domains.{name}.faults.rules must be a list of rules", key=[*at, "rules"])
    for n, rule in enumerate(rules):
        if not isinstance(rule, str | Mapping):
            raise ConfigError(f"domains.{name}.faults.rules[{n}] must be a spec string or a table",
                              key=[*at, "rules"])
        try:
            as_rule(rule)
        except FaultSpecError as exc:
            raise ConfigError(f"domains.{name}.faults.rules[{n}]: {exc}", key=[*at, "rules"]) from None
    return list(rules), seed


def _split_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: expected host:port, got {text!r}")
    return host, int(port)


def default_config() -> LabConfig:
    """corp.example (organisation: alice, bob, carol) and mail.example (external: dave, erin)."""
    return LabConfig(domains=[
        DomainConfig.with_users("corp.example", "organisation", ["alice", "bob", "carol"]),
        DomainConfig.with_users("mail.example", "external", ["dave", "erin"]),
    ])


def check_policy_settings(config: LabConfig) -> None:
    """Every key of a domain's `policies` table must be read by one of the domain's policies (a misspelt
    `recall_mod` would otherwise be ignored in silence); the domain server checks the same when it starts."""
    from recall_lab.fake_servers.pipeline import (
        UnknownPolicy,
        load_policy_modules,
        resolve_pipeline,
        unknown_settings,
    )

    try:
        load_policy_modules(config.policy_modules)
    except ImportError as exc:
        raise ConfigError(f"cannot import policy module {exc.name or ''}: {exc}".replace(" :", ":"),
                          key=["policy_modules"]) from None
    for d in config.domains:
        try:
            registrations = resolve_pipeline(d.pipeline, d.role)
        except UnknownPolicy as exc:
            raise ConfigError(f"domains.{d.name}.pipeline: {exc.args[0]}", key=["domains", d.name, "pipeline"]
                              ) from None
        unknown, allowed = unknown_settings(d.policies, registrations)
        if unknown:
            names = ", ".join(r.name for r in registrations) or "none"
            close = difflib.get_close_matches(unknown[0], allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"unknown key domains.{d.name}.policies.{unknown[0]}{hint}: no policy of {d.name} "
                              f"reads it (its policies: {names}; allowed: {', '.join(allowed) or 'none'})",
                              key=["domains", d.name, "policies", unknown[0]])


def _line_of(text: str, key: list[str]) -> int | None:
    """The line (from 1) where `key`'s last part is written: an assignment or a table header, searched from
    the header of its parent table when there is one."""
    lines = text.splitlines()
    name = re.escape(key[-1])
    quoted = rf'(?:"{name}"|\'{name}\'|{name})'
    assign = re.compile(rf"^\s*{quoted}\s*=")
    header = re.compile(rf"^\s*\[\[?[^\]]*{quoted}\s*\]")
    start = 0
    if len(key) > 1:
        parent = re.escape(key[-2])
        parent_header = re.compile(rf'^\s*\[\[?[^\]]*(?:"{parent}"|\'{parent}\'|\b{parent}\b)\s*\]')
        start = next((i for i, line in enumerate(lines) if parent_header.search(line)), 0)
    for i in range(start, len(lines)):
        if assign.search(lines[i]) or header.search(lines[i]):
            return i + 1
    for i in range(0, start):
        if assign.search(lines[i]) or header.search(lines[i]):
            return i + 1
    return None


def load_config(path: str | Path) -> LabConfig:
    """Read a TOML lab config; ConfigError (one line, naming the file and the line) when it is unreadable or
    wrong."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {p} is not valid TOML: {exc}") from None
    try:
        return LabConfig.from_dict(data)
    except ConfigError as exc:
        line = _line_of(text, exc.key) if exc.key else None
        where = f"{p}, line {line}" if line else str(p)
        raise ConfigError(f"config {where}: {exc}", key=exc.key) from None
