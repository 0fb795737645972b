"""Success against the recall delay: each condition run with the recall at fixed delays (`matrix --sweep`).

Why a sweep instead of one more guessed number: how fast a sender notices a mistake decides most rows of the
table, and no source measures it (docs/modelling.md). So the table is read at one stated assumption, and the
sweep shows the whole curve: for each condition and each delay d, N trials whose recall (or cancel) happens
exactly d seconds after the send, everything else sampled as in the table. Each point gets its Wilson interval.

A sweep point is an ordinary scenario (a copy of the condition with `recall_delay` fixed and a name of its own,
`web-client-at-600s`), so it runs in the same labs as the table's trials, with seeds of its own.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recall_lab.harness.scenarios.distributions import Dist, ScenarioError
from recall_lab.harness.scenarios.model import Scenario
from recall_lab.harness.scenarios.results import MatrixResult
from recall_lab.harness.scenarios.stats import Z95, Rate

#: The parameters a sweep can vary (only the recall delay, for now).
PARAMETERS = ("recall-delay",)

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_VALUE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")


def parse_sweep(text: str) -> tuple[str, tuple[float, ...]]:
    """`recall-delay=30,120,10m,1h` -> ("recall-delay", (30, 120, 600, 3600)); ScenarioError when malformed."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("_", "-")
    if not sep or name not in PARAMETERS:
        raise ScenarioError(f"--sweep: expected {PARAMETERS[0]}=SECONDS,SECONDS,... (e.g. recall-delay=30,120,600), "
                            f"got {text!r}")
    delays: list[float] = []
    for item in values.split(","):
        m = _VALUE.match(item)
        if m is None:
            raise ScenarioError(f"--sweep: {item.strip()!r} is not a delay (seconds, or with s, m or h)")
        delay = float(m.group(1)) * _UNITS[m.group(2) or ""]
        if delay not in delays:
            delays.append(delay)
    return name, tuple(sorted(delays))


def point_name(scenario: str, delay: float) -> str:
    """The name of a sweep point's scenario: `web-client-at-600s` (a valid scenario name)."""
    return f"{scenario}-at-{delay:g}s".replace(".", "p")


@dataclass(frozen=True)
class SweepPlan:
    """Which conditions, at which recall delays; `points()` are the scenarios to run besides the table's."""

    scenarios: tuple[Scenario, ...]
    delays: tuple[float, ...]
    parameter: str = "recall-delay"

    def points(self) -> list[Scenario]:
        out = []
        for s in self.scenarios:
            for d in self.delays:
                out.append(dataclasses.replace(
                    s, name=point_name(s.name, d), demo_trial=0,
                    recall_delay=Dist("fixed", value=d, source="the sweep: the recall at this fixed delay")))
        return out

    def origin(self) -> dict[str, tuple[str, float]]:
        """Point scenario name -> (condition's scenario name, delay)."""
        return {point_name(s.name, d): (s.name, d) for s in self.scenarios for d in self.delays}


@dataclass(frozen=True)
class SweepPoint:
    delay: float
    rate: Rate

    def to_json(self) -> dict[str, Any]:
        low, high = self.rate.interval
        return {"recall_delay": self.delay, "successes": self.rate.successes, "trials": self.rate.trials,
                "rate": round(self.rate.rate, 4), "ci95": [round(low, 4), round(high, 4)]}


@dataclass
class SweepResult:
    """Per condition and mode, the success rate at each recall delay."""

    plan: SweepPlan
    trials_per_point: int
    modes: tuple[str, ...]
    curves: dict[tuple[str, str], list[SweepPoint]]  # (scenario, mode) -> points in delay order

    def to_json(self) -> dict[str, Any]:
        return {
            "parameter": self.plan.parameter,
            "recall_delays": list(self.plan.delays),
            "trials_per_point": self.trials_per_point,
            "interval": {"method": "wilson", "confidence": 0.95, "z": Z95},
            "conditions": [
                {"scenario": s.name, "condition": s.condition,
                 "modes": {m: [p.to_json() for p in self.curves.get((s.name, m), [])] for m in self.modes
                           if (s.name, m) in self.curves}}
                for s in self.plan.scenarios],
        }


def split_result(result: MatrixResult, plan: SweepPlan) -> tuple[MatrixResult, SweepResult]:
    """A run of the table's scenarios plus the sweep's points -> (the table's result, the sweep's curves)."""
    origin = plan.origin()
    table = MatrixResult(seed=result.seed, trials_per_cell=result.trials_per_cell,
                         scenarios=[s for s in result.scenarios if s.name not in origin], modes=result.modes,
                         transcripts={k: v for k, v in result.transcripts.items() if k not in origin},
                         elapsed=result.elapsed, realtime=result.realtime)
    curves: dict[tuple[str, str], list[SweepPoint]] = {}
    for (name, mode), cell in result.cells.items():
        if name in origin:
            base, delay = origin[name]
            curves.setdefault((base, mode), []).append(SweepPoint(delay, cell.rate))
        else:
            table.cells[(name, mode)] = cell
    for points in curves.values():
        points.sort(key=lambda p: p.delay)
    return table, SweepResult(plan, result.trials_per_cell, result.modes, curves)


def sweep_from_json(data: dict[str, Any], scenarios: Sequence[Scenario]) -> SweepResult:
    """The `sweep` section of a JSON report back into a SweepResult (for an HTML report from a saved run)."""
    by_name = {s.name: s for s in scenarios}
    chosen = tuple(by_name[c["scenario"]] for c in data["conditions"] if c["scenario"] in by_name)
    plan = SweepPlan(chosen, tuple(float(d) for d in data["recall_delays"]), data.get("parameter", "recall-delay"))
    curves: dict[tuple[str, str], list[SweepPoint]] = {}
    modes: list[str] = []
    for c in data["conditions"]:
        for mode, points in c["modes"].items():
            if mode not in modes:
                modes.append(mode)
            curves[(c["scenario"], mode)] = [SweepPoint(float(p["recall_delay"]), Rate(int(p["successes"]),
                                                                                       int(p["trials"])))
                                             for p in points]
    return SweepResult(plan, int(data["trials_per_point"]), tuple(modes), curves)


def recall_delay_note(scenarios: Sequence[Scenario]) -> tuple[str, str]:
    """What the table was read at: (the most common recall delay, one line naming every condition's).

    Why the table must say it: the recall delay (when the sender notices) has no data behind it, and most rows
    depend on it; a rate without the delay it was read at would look like a fact about recall."""
    groups: dict[str, list[str]] = {}
    for s in scenarios:
        groups.setdefault(s.recall_delay.describe(), []).append(s.name)
    if not groups:
        return "", ""
    common = max(groups, key=lambda k: len(groups[k]))
    others = [f"{', '.join(names)}: {delay}" for delay, names in groups.items() if delay != common]
    line = f"Recall delay (when the sender notices; an assumption, no data): {common}"
    if others:
        line += "; except " + "; ".join(others)
    return common, line + ". `recall-lab matrix --sweep recall-delay=30,120,600,1800,3600` reads success at fixed delays."
