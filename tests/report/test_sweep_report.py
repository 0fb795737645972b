"""The reports' sweep section and sources, from results built by hand (no lab needed)."""

import json
import re

from recall_lab.harness.report import render_html, write_json
from recall_lab.harness.report.json_report import load_sweep
from recall_lab.harness.report.plot import sweep_svg
from recall_lab.harness.scenarios import find_scenario
from recall_lab.harness.scenarios.results import MatrixResult, TrialResult
from recall_lab.harness.scenarios.stats import Rate
from recall_lab.harness.scenarios.sweep import SweepPlan, SweepPoint, SweepResult

DELAYS = (30.0, 120.0, 600.0)


def _result() -> tuple[MatrixResult, SweepResult]:
    scenarios = [find_scenario("same-org-desktop"), find_scenario("delayed-send-gmail")]
    r = MatrixResult(seed=1, trials_per_cell=4, scenarios=scenarios, modes=("cloud",))
    for s in scenarios:
        for i in range(4):
            r.add(TrialResult(scenario=s.name, mode="cloud", index=i, seed=f"1:{s.name}:{i}", client="desktop",
                              recipient_kind=s.recipient, recall_at=60.0 * (i + 1), verdict="recalled",
                              report_status="recalled", read_before_recall=False, preview_seen=True,
                              server_copy=False, client_copy=False, events=("0 send",)))
    curves = {("same-org-desktop", "cloud"): [SweepPoint(d, Rate(k, 4)) for d, k in zip(DELAYS, (3, 3, 2),
                                                                                          strict=True)],
              ("delayed-send-gmail", "cloud"): [SweepPoint(d, Rate(0, 4)) for d in DELAYS]}
    return r, SweepResult(SweepPlan(tuple(scenarios), DELAYS), 4, ("cloud",), curves)


def test_html_shows_each_distributions_source_and_the_table_delay() -> None:
    r, _sweep = _result()
    page = render_html(r)
    assert "[fit to Kooti et al. 2015 reply times" in page
    assert "assumption: no data on how fast a sender notices a mistake" in page
    assert "The table (read at the recall delay: " in page and "Recall delay (when the sender notices" in page
    assert "Success against a fixed recall delay" not in page  # no sweep, no section


def test_html_sweep_section_has_a_line_and_band_per_condition_and_its_numbers() -> None:
    r, sweep = _result()
    page = render_html(r, sweep=sweep)
    assert "Success against a fixed recall delay (sweep)" in page
    assert "0.75 [0.30-0.95]" in page and "0.00 [0.00-0.49]" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|<script|<link\b""", page)
    svg = sweep_svg(sweep)
    assert svg.count('id="FillBetweenPolyCollection') == 2  # one band per condition


def test_json_sweep_section_round_trips(tmp_path) -> None:
    r, sweep = _result()
    path = write_json(r, tmp_path / "s.json", sweep=sweep)
    data = json.loads(path.read_text())
    assert data["sweep"]["recall_delays"] == list(DELAYS) and data["sweep"]["trials_per_point"] == 4
    point = data["sweep"]["conditions"][0]["modes"]["cloud"][0]
    assert point == {"recall_delay": 30.0, "successes": 3, "trials": 4, "rate": 0.75, "ci95": [0.3006, 0.9544]}
    assert data["recall_delay"]["table"] == "uniform 2 min-15 min"
    assert data["scenarios"][0]["open_delay"]["source"].startswith("fit to Kooti")
    back = load_sweep(path)
    assert back is not None and back.curves == sweep.curves
    assert load_sweep(write_json(r, tmp_path / "t.json")) is None
