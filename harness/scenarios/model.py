"""A scenario: one condition of the recall article's table, as data.

Why declarative: a teacher (or a test) should be able to read a condition as a handful of facts ("the
recipient reads mail in a web page that reloads every ten minutes; the sender notices the mistake within a
few minutes") and change one without touching code. The same facts exist as TOML files shipped next to this
module (`harness/scenarios/*.toml`) and as `Scenario` objects; `load_scenario_file` turns one into the other
and the tests check both agree.

Times are seconds of simulated time. The sender sends at t = 0; recipient-side delays count from the moment
the message reaches the recipient's mailbox (later than 0 only with delayed send); the recall delay counts
from the send, because it is the sender who notices the mistake.

Faults (`faults`, docs/faults.md) are written as `serve --fault` writes them, `DOMAIN:SPEC`, so a rule tried on
a running lab can be pasted into a row unchanged. They are the servers' behaviour during one trial, not the
lab's: the engine adds them when the trial starts (or just before the recall, `faults_at = "recall"`, for a
rule that must spare the original) and clears them when it ends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from recall_lab.fake_servers.faults import FaultRule, FaultSpecError, parse_spec
from recall_lab.fake_servers.recall.modes import ACTIVE_MODES as MODES
from recall_lab.fake_servers.recall.modes import ActiveMode as Mode
from recall_lab.harness.scenarios.distributions import NEVER, Dist, ScenarioError
from recall_lab.harness.scenarios.stats import WORDS as LIKELIHOOD_WORDS

RecipientKind = Literal["organisation", "external", "list", "shared"]
ClientKind = Literal["desktop", "web", "live-web"]
FaultsAt = Literal["send", "recall"]
# A scenario runs in the modes that recall something (`Mode`, `MODES`: named once, in the server layer).
CLIENTS: tuple[str, ...] = ("desktop", "web", "live-web")
# "list": a distribution list the organisation expands into `members` mailboxes at delivery; "shared": one shared
# mailbox read by `members` people, each with a desktop client of their own.
RECIPIENTS: tuple[str, ...] = ("organisation", "external", "list", "shared")
#: Copies that escape any recall: the recipient forwards it to another provider, a server rule forwards it there at
#: delivery, the recipient replies quoting it, a phone shows it on the lock screen, a phone syncs it then goes
#: offline (see harness/clients/outcome.py, `Residue`).
ESCAPES: tuple[str, ...] = ("forward", "auto-forward", "reply", "lock-screen", "phone-sync")
#: When a trial's fault rules are added: when it starts (the send), or just before the recall is sent.
FAULTS_AT: tuple[str, ...] = ("send", "recall")

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class Scenario:
    """One condition, with everything a trial samples from. See docs/scenarios.md#a-scenario-file for each field."""

    name: str  # slug, used on the command line (`--scenario same-org-desktop`)
    condition: str  # the row label in the table, in the article's words where it has one
    summary: str  # one or two sentences: what the condition is and why the outcome is what it is
    order: int = 100  # row order in the table (the article's four rows first)
    article: bool = False  # one of the article's own four conditions
    article_word: str | None = None  # the article's likelihood word for this row (High, Moderate, Low, None)
    article_note: str = ""  # why the measured word may differ from the article's (shown when it does)
    recipient: RecipientKind = "organisation"
    client: ClientKind = "desktop"
    recall_delay: Dist = field(default_factory=lambda: Dist("uniform", low=60, high=600))
    open_delay: Dist = NEVER  # after delivery; "never" = the user does not open it during the trial
    preview: bool = True  # the client shows a notification preview (subject, first line) on arrival
    move_to: str | None = None  # a rule moves the message to this folder on arrival
    delete_delay: Dist = NEVER  # the user deletes the message (moves it to Trash)
    page_load_interval: Dist | None = None  # web client: time between page loads (first load at delivery)
    offline_at: Dist = NEVER  # desktop client: goes offline at this time after the send
    offline_for: Dist = field(default_factory=lambda: Dist("fixed", value=0.0))
    purge_deleted_after: float | None = None  # retention: Trash items older than this are purged
    purge_lag: Dist = field(default_factory=lambda: Dist("fixed", value=0.0))  # purge tick after that age
    legal_hold: bool = False  # the recipient's mailbox is on legal hold
    delayed_send: float | None = None  # the submission waits this long in the sender's outbox
    escapes: tuple[str, ...] = ()  # copies that escape any recall (ESCAPES)
    escape_delay: Dist = NEVER  # after delivery: when the recipient forwards or replies ("forward", "reply")
    members: int = 3  # "list": the list's members; "shared": the people reading the shared mailbox
    # Outlook's "automatically process requests and responses" (on by default): off, a legacy recall is acted on
    # only when the recipient opens the recall message (`recall_open_delay`, after the recall's arrival)
    auto_process_recalls: bool = True
    recall_open_delay: Dist = NEVER
    demo: bool = True  # false: the row is measured by `recall-lab matrix` only, not by the demo
    observe_for: float = 600.0  # after the recall, how long the trial keeps running before the outcome
    policies: Mapping[str, Any] = field(default_factory=dict)  # extra settings for the organisation's policies
    faults: tuple[str, ...] = ()  # injected faults for each trial, "DOMAIN:SPEC" as `serve --fault` takes them
    faults_at: FaultsAt = "send"  # when the engine adds them ("recall": just before the recall is sent)
    modes: tuple[Mode, ...] = MODES
    narration: str = ""  # what the demo says before it walks this condition
    demo_trial: int = 0  # which trial the demo narrates (one that shows the condition's typical outcome)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def lab_policies(self) -> dict[str, Any]:
        """The organisation's policy settings this scenario needs besides the recall mode (its lab key)."""
        out = dict(self.policies)
        if self.purge_deleted_after is not None:
            out["purge_deleted_after"] = self.purge_deleted_after
        if self.delayed_send is not None:
            out["delayed_send"] = self.delayed_send
        return out

    @property
    def fault_rules(self) -> list[tuple[str, FaultRule]]:
        """The faults as (domain, rule), in the order they are added."""
        return [parse_spec(spec) for spec in self.faults]

    def to_toml_dict(self) -> dict[str, Any]:
        """The table `load_scenario_data` reads back into an equal scenario."""
        out: dict[str, Any] = {}
        for key in _FIELDS:
            value = getattr(self, key)
            if isinstance(value, Dist):
                out[key] = value.to_toml_value()
            elif key in ("modes", "escapes", "faults"):
                out[key] = list(value)
            elif key == "policies":
                out[key] = dict(value)
            elif value is not None:
                out[key] = value
        return out


_FIELDS = tuple(f for f in Scenario.__dataclass_fields__)
_DIST_FIELDS = ("recall_delay", "open_delay", "delete_delay", "page_load_interval", "offline_at", "offline_for",
                "purge_lag", "escape_delay", "recall_open_delay")


def validate(s: Scenario) -> None:
    """Raise ScenarioError naming the scenario and the field when a combination makes no sense."""
    where = f"scenario {s.name!r}"
    if not _NAME.match(s.name or ""):
        raise ScenarioError(f"{where}: name must be lower-case letters, digits and dashes")
    if not s.condition.strip():
        raise ScenarioError(f"{where}: condition must not be empty")
    if s.recipient not in RECIPIENTS:
        raise ScenarioError(f"{where}: recipient must be one of {', '.join(RECIPIENTS)}, got {s.recipient!r}")
    if s.client not in CLIENTS:
        raise ScenarioError(f"{where}: client must be one of {', '.join(CLIENTS)}, got {s.client!r}")
    if not s.modes or any(m not in MODES for m in s.modes):
        raise ScenarioError(f"{where}: modes must be a non-empty subset of {', '.join(MODES)}")
    if s.recall_delay.kind == "never" or s.recall_delay.probability < 1.0:
        raise ScenarioError(f"{where}: recall_delay must always happen (it is the point of the trial)")
    if s.client == "web" and s.page_load_interval is None:
        raise ScenarioError(f"{where}: a web client needs page_load_interval")
    if s.client == "web" and s.page_load_interval is not None and s.page_load_interval.kind == "fixed" \
            and s.page_load_interval.value <= 0:
        raise ScenarioError(f"{where}: page_load_interval must be positive")
    if s.client != "desktop" and s.offline_at.kind != "never":
        raise ScenarioError(f"{where}: only a desktop client goes offline")
    if s.purge_deleted_after is not None and s.purge_deleted_after < 0:
        raise ScenarioError(f"{where}: purge_deleted_after cannot be negative")
    if s.delayed_send is not None and s.delayed_send <= 0:
        raise ScenarioError(f"{where}: delayed_send must be positive")
    if s.article_word is not None and s.article_word not in LIKELIHOOD_WORDS:
        raise ScenarioError(f"{where}: article_word must be one of {', '.join(LIKELIHOOD_WORDS)}, "
                            f"got {s.article_word!r}")
    if s.demo_trial < 0:
        raise ScenarioError(f"{where}: demo_trial cannot be negative")
    if s.observe_for <= 0:
        raise ScenarioError(f"{where}: observe_for must be positive")
    if s.move_to is not None and (not s.move_to.strip() or s.move_to.upper() == "INBOX"):
        raise ScenarioError(f"{where}: move_to must name a folder other than INBOX")
    if any(e not in ESCAPES for e in s.escapes) or len(set(s.escapes)) != len(s.escapes):
        raise ScenarioError(f"{where}: escapes must be distinct names from {', '.join(ESCAPES)}")
    if {"forward", "reply"} & set(s.escapes) and s.escape_delay.kind == "never":
        raise ScenarioError(f"{where}: a forward or a reply needs escape_delay (when the recipient sends it)")
    if s.recipient in ("list", "shared") and not 1 <= s.members <= 20:
        raise ScenarioError(f"{where}: members must be within 1..20")
    if s.recipient in ("list", "shared") and (s.client != "desktop" or s.escapes or s.legal_hold):
        raise ScenarioError(f"{where}: a list or shared mailbox is read with desktop clients, without escapes "
                            "or legal hold")
    if s.escapes and s.recipient != "organisation":
        raise ScenarioError(f"{where}: escapes are modelled for a recipient in the organisation")
    if s.recipient == "external" and (s.legal_hold or s.purge_deleted_after is not None):
        raise ScenarioError(f"{where}: legal hold and retention are the organisation's policies, "
                            "not the external provider's")
    if (not s.auto_process_recalls or s.recall_open_delay.kind != "never") and \
            (s.client != "desktop" or s.recipient != "organisation"):
        raise ScenarioError(f"{where}: auto_process_recalls and recall_open_delay are settings of the recipient's "
                            "desktop client in the organisation")
    if s.recall_open_delay.kind != "never" and s.auto_process_recalls:
        raise ScenarioError(f"{where}: recall_open_delay needs auto_process_recalls = false (a client that "
                            "processes recalls on arrival leaves no recall message to open)")
    _validate_faults(s, where)


def _validate_faults(s: Scenario, where: str) -> None:
    if s.faults_at not in FAULTS_AT:
        raise ScenarioError(f"{where}: faults_at must be one of {', '.join(FAULTS_AT)}, got {s.faults_at!r}")
    for n, spec in enumerate(s.faults):
        if not isinstance(spec, str):
            raise ScenarioError(f"{where}: faults[{n}] must be a DOMAIN:SPEC string, got {spec!r}")
        try:
            _domain, rule = parse_spec(spec)
        except FaultSpecError as exc:
            raise ScenarioError(f"{where}: faults[{n}]: {exc}") from None
        if rule.kind == "outage" and rule.silent:
            # A silent MX costs the relay its connection timeout on the wall clock at every attempt, while the
            # trial's clock stands still: a matrix of them would measure timeouts, not the condition.
            raise ScenarioError(f"{where}: faults[{n}]: a scenario's outage answers 421 (mode=silent is for "
                                "a lab run on the wall clock)")


def load_scenario_data(data: Mapping[str, Any], where: str = "scenario") -> Scenario:
    """A scenario from a parsed TOML table; unknown keys and wrong types are ScenarioError."""
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{where}: expected a table")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s): {', '.join(unknown)}")
    for required in ("name", "condition", "summary"):
        if required not in data:
            raise ScenarioError(f"{where}: missing {required}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        at = f"{where}.{key}"
        if key in _DIST_FIELDS:
            kwargs[key] = Dist.parse(value, at)
        elif key in ("name", "condition", "summary", "recipient", "client", "narration", "move_to",
                     "article_word", "article_note", "faults_at"):
            kwargs[key] = _typed(value, str, at)
        elif key in ("article", "preview", "legal_hold", "demo", "auto_process_recalls"):
            kwargs[key] = _typed(value, bool, at)
        elif key in ("order", "demo_trial", "members"):
            kwargs[key] = _typed(value, int, at)
        elif key in ("purge_deleted_after", "delayed_send", "observe_for"):
            kwargs[key] = float(_number(value, at))
        elif key == "policies":
            kwargs[key] = dict(_typed(value, Mapping, at))
        elif key in ("modes", "escapes"):
            if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
                raise ScenarioError(f"{at}: expected a list of names")
            kwargs[key] = tuple(value)
        elif key == "faults":
            if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
                raise ScenarioError(f'{at}: expected a list of "DOMAIN:SPEC" strings')
            kwargs[key] = tuple(value)
    try:
        return Scenario(**kwargs)
    except ScenarioError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def _typed(value: Any, kind: type, at: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ScenarioError(f"{at}: expected {kind.__name__}, got {value!r}")
    return value


def _number(value: Any, at: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{at}: expected a number, got {value!r}")
    return float(value)
