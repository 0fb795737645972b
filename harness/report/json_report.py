"""The matrix result as JSON (`recall-lab matrix --json FILE`): the table, every trial, the transcripts.

The form is `MatrixResult.to_json()` (version 1): {version, seed, trials_per_cell, modes, interval,
likelihood_thresholds, scenarios, table: [{scenario, condition, article, cloud: {likelihood, rate, ci95,
successes, trials, verdicts}, legacy: {...}}], trials: [...], transcripts: {scenario: [lines]}}.
"""

from __future__ import annotations

import json
from pathlib import Path

from recall_lab.harness.scenarios.results import MatrixResult


def write_json(result: MatrixResult, path: str | Path) -> Path:
    p = Path(path)
    p.write_text(json.dumps(result.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return p


def load_json(path: str | Path) -> MatrixResult:
    return MatrixResult.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
