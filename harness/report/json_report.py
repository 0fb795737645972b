"""The matrix result as JSON (`recall-lab matrix --json FILE`): the table, every trial, the transcripts.

The form is `MatrixResult.to_json()` (version 1): {version, seed, trials_per_cell, modes, interval,
likelihood_thresholds, scenarios, table: [{scenario, condition, article, cloud: {likelihood, rate, ci95,
successes, trials, verdicts}, legacy: {...}}], trials: [...], transcripts: {scenario: [lines]}}, plus
`recall_delay` ({table: the recall delay most rows were read at, note: every row's}) and, after
`matrix --sweep`, `sweep` ({parameter, recall_delays, trials_per_point, interval, conditions: [{scenario,
condition, modes: {cloud: [{recall_delay, successes, trials, rate, ci95}, ...]}}]}).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recall_lab.harness.scenarios.results import MatrixResult
from recall_lab.harness.scenarios.sweep import SweepResult, recall_delay_note, sweep_from_json


def result_json(result: MatrixResult, sweep: SweepResult | None = None) -> dict[str, Any]:
    data = result.to_json()
    common, note = recall_delay_note(result.scenarios)
    data["recall_delay"] = {"table": common, "note": note}
    if sweep is not None:
        data["sweep"] = sweep.to_json()
    return data


def write_json(result: MatrixResult, path: str | Path, sweep: SweepResult | None = None) -> Path:
    p = Path(path)
    p.write_text(json.dumps(result_json(result, sweep), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return p


def load_json(path: str | Path) -> MatrixResult:
    return MatrixResult.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def load_sweep(path: str | Path) -> SweepResult | None:
    """The sweep of a saved run (None when it was run without `--sweep`)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if "sweep" not in data:
        return None
    return sweep_from_json(data["sweep"], MatrixResult.from_json(data).scenarios)
