"""What a run produced: one `TrialResult` per trial, gathered per (scenario, mode) cell into a `MatrixResult`.

Why plain data with a JSON form: the table, the JSON file, the HTML report and the tests all read the same
objects; nothing in a report reaches back into a lab. `MatrixResult.to_json()` is the documented machine form
(`recall-lab matrix --json FILE`); `from_json` reads it back (the HTML report can be rebuilt from a JSON file).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from recall_lab.harness.scenarios.model import MODES, Scenario
from recall_lab.harness.scenarios.stats import WORD_RULE, Z95, Rate, trials_to_settle

JSON_VERSION = 1

#: Verdicts of one recipient in one trial (recall_lab.harness.clients.outcome.judge), plus our own for delayed send.
VERDICTS = ("recalled", "partial", "failed", "impossible")


@dataclass(frozen=True, slots=True)
class TrialResult:
    scenario: str
    mode: str
    index: int
    seed: str
    client: str  # "desktop" | "web" (the recipient's client)
    recipient_kind: str  # "organisation" | "external"
    recall_at: float  # simulated seconds from send to recall (or cancel)
    verdict: str  # one of VERDICTS
    report_status: str  # the recall report's status for the recipient ("cancelled" for delayed send)
    read_before_recall: bool
    preview_seen: bool
    server_copy: bool  # the original still in the recipient's mailbox (any folder) at the end
    client_copy: bool  # the recipient's client still shows it at the end
    events: tuple[str, ...]  # "<t> <kind>" in the order they ran
    message_id: str = ""
    elapsed: float = 0.0  # wall seconds the trial took
    error: str = ""  # set when a step failed; the trial then counts as failed
    residue: dict[str, Any] = field(default_factory=dict)  # what is left after the recall (clients.outcome.Residue)

    @property
    def success(self) -> bool:
        return self.verdict == "recalled"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["events"] = list(self.events)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialResult:
        d = dict(data)
        d["events"] = tuple(d.get("events", ()))
        return cls(**d)


@dataclass
class Cell:
    """The trials of one scenario in one mode."""

    scenario: str
    mode: str
    trials: list[TrialResult] = field(default_factory=list)

    @property
    def rate(self) -> Rate:
        return Rate(sum(t.success for t in self.trials), len(self.trials))

    def verdict_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(VERDICTS, 0)
        for t in self.trials:
            counts[t.verdict] = counts.get(t.verdict, 0) + 1
        return counts

    def residue_counts(self) -> dict[str, int]:
        """How many trials left each kind of residue (gone from every view, recoverable, escaped copies...)."""
        from recall_lab.harness.clients.outcome import summarise_residues

        return summarise_residues(t.residue for t in self.trials)


@dataclass
class MatrixResult:
    """A whole run: scenarios (in table order), modes, cells, and one protocol transcript per scenario."""

    seed: int | str
    trials_per_cell: int
    scenarios: list[Scenario]
    modes: tuple[str, ...] = MODES
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    transcripts: dict[str, list[str]] = field(default_factory=dict)  # scenario -> lines (first trial, cloud)
    elapsed: float = 0.0
    realtime: bool = False

    def cell(self, scenario: str, mode: str) -> Cell:
        key = (scenario, mode)
        if key not in self.cells:
            self.cells[key] = Cell(scenario, mode)
        return self.cells[key]

    def add(self, trial: TrialResult) -> None:
        self.cell(trial.scenario, trial.mode).trials.append(trial)

    def sort(self) -> None:
        for c in self.cells.values():
            c.trials.sort(key=lambda t: t.index)

    def all_trials(self) -> Iterable[TrialResult]:
        """Every trial in table order (scenario, then mode, then index), whatever order they finished in."""
        rank = {s.name: i for i, s in enumerate(self.scenarios)}
        modes = {m: i for i, m in enumerate(self.modes)}
        for key in sorted(self.cells, key=lambda k: (rank.get(k[0], len(rank)), k[0], modes.get(k[1], 9), k[1])):
            yield from self.cells[key].trials

    @property
    def trial_count(self) -> int:
        return sum(len(c.trials) for c in self.cells.values())

    def rows(self) -> list[dict[str, Any]]:
        """One row per scenario: the table's content as data (what the JSON `table` holds)."""
        out = []
        for s in self.scenarios:
            row: dict[str, Any] = {"scenario": s.name, "condition": s.condition, "article": s.article,
                                   "article_word": s.article_word, "article_note": s.article_note}
            for mode in self.modes:
                if mode not in s.modes or (s.name, mode) not in self.cells:
                    row[mode] = None
                    continue
                cell = self.cells[(s.name, mode)]
                r = cell.rate
                low, high = r.interval
                row[mode] = {"likelihood": r.likelihood, "rate": round(r.rate, 4), "ci95": [round(low, 4),
                             round(high, 4)], "successes": r.successes, "trials": r.trials,
                             "verdicts": cell.verdict_counts(), "residue": cell.residue_counts(),
                             "likelihood_of_rate": r.rate_likelihood,
                             "settle_trials": trials_to_settle(r.rate) if r.straddles else None}
            out.append(row)
        return out

    def to_json(self) -> dict[str, Any]:
        self.sort()
        return {
            "version": JSON_VERSION,
            "seed": self.seed,
            "trials_per_cell": self.trials_per_cell,
            "modes": list(self.modes),
            "realtime": self.realtime,
            "elapsed_seconds": round(self.elapsed, 3),
            "interval": {"method": "wilson", "confidence": 0.95, "z": Z95},
            "likelihood_thresholds": {"High": ">= 0.8", "Moderate": ">= 0.4", "Low": "> 0", "None": "== 0"},
            "likelihood_rule": WORD_RULE,
            "scenarios": [s.to_toml_dict() for s in self.scenarios],
            "table": self.rows(),
            "trials": [t.to_json() for t in self.all_trials()],
            "transcripts": {s.name: self.transcripts[s.name] for s in self.scenarios if s.name in self.transcripts},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MatrixResult:
        from recall_lab.harness.scenarios.model import load_scenario_data

        scenarios = [load_scenario_data(s, f"scenario {s.get('name')!r}") for s in data["scenarios"]]
        result = cls(seed=data["seed"], trials_per_cell=int(data["trials_per_cell"]), scenarios=scenarios,
                     modes=tuple(data["modes"]), transcripts=dict(data.get("transcripts", {})),
                     elapsed=float(data.get("elapsed_seconds", 0.0)), realtime=bool(data.get("realtime")))
        for t in data["trials"]:
            result.add(TrialResult.from_json(t))
        result.sort()
        return result
