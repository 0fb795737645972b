"""`matrix --sweep recall-delay=...`: each condition at fixed recall delays, with Wilson intervals."""

import asyncio
import json
import subprocess
import sys

import pytest

from recall_lab.harness.cli import main
from recall_lab.harness.matrix import MatrixOptions, run_matrix
from recall_lab.harness.scenarios import ScenarioError, builtin_scenarios, find_scenario
from recall_lab.harness.scenarios.sweep import (
    SweepPlan,
    parse_sweep,
    point_name,
    recall_delay_note,
    split_result,
    sweep_from_json,
)


def test_parse_sweep_accepts_seconds_and_units() -> None:
    assert parse_sweep("recall-delay=600,30,2m,1h,30") == ("recall-delay", (30.0, 120.0, 600.0, 3600.0))
    assert parse_sweep("recall_delay=1.5") == ("recall-delay", (1.5,))


@pytest.mark.parametrize(("text", "message"), [
    ("open-delay=30", "expected recall-delay=SECONDS"),
    ("recall-delay", "expected recall-delay=SECONDS"),
    ("recall-delay=30,soon", "'soon' is not a delay"),
    ("recall-delay=-5", "'-5' is not a delay"),
])
def test_parse_sweep_refuses_what_it_cannot_read(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_sweep(text)
    assert message in str(info.value)


def test_points_change_only_the_recall_delay_and_the_name() -> None:
    base = find_scenario("web-client")
    plan = SweepPlan((base,), (30.0, 1.5))
    points = plan.points()
    assert [p.name for p in points] == ["web-client-at-30s", "web-client-at-1p5s"]
    assert points[0].recall_delay.kind == "fixed" and points[0].recall_delay.value == 30
    assert points[0].open_delay == base.open_delay and points[0].page_load_interval == base.page_load_interval
    assert plan.origin()[point_name("web-client", 30.0)] == ("web-client", 30.0)


def test_sweep_of_a_delayed_send_row_is_the_window() -> None:
    """Cancel before the window closes: recalled every time; after it: impossible every time (another provider).
    The table's own trials are split off unchanged."""
    defer = find_scenario("delayed-send-outlook-defer")
    plan = SweepPlan((defer,), (30.0, 300.0))
    result = asyncio.run(run_matrix(MatrixOptions(scenarios=[defer, *plan.points()], trials=3, seed=2,
                                                  modes=("cloud",), transcripts=False)))
    table, sweep = split_result(result, plan)
    assert [s.name for s in table.scenarios] == ["delayed-send-outlook-defer"]
    assert set(table.cells) == {("delayed-send-outlook-defer", "cloud")}
    curve = sweep.curves[("delayed-send-outlook-defer", "cloud")]
    assert [(p.delay, p.rate.successes, p.rate.trials) for p in curve] == [(30.0, 3, 3), (300.0, 0, 3)]
    data = sweep.to_json()
    assert data["recall_delays"] == [30.0, 300.0] and data["interval"]["method"] == "wilson"
    first = data["conditions"][0]["modes"]["cloud"][0]
    assert first["rate"] == 1.0 and first["ci95"][1] == 1.0 and 0.3 < first["ci95"][0] < 0.5
    back = sweep_from_json(json.loads(json.dumps(data)), [defer])
    assert back.curves == sweep.curves


def test_the_table_states_the_recall_delay_it_was_read_at() -> None:
    common, note = recall_delay_note(builtin_scenarios())
    assert common == "uniform 2 min-15 min"
    assert note.startswith("Recall delay (when the sender notices; an assumption, no data): uniform 2 min-15 min")
    assert "read-before-recall: uniform 5 min-15 min" in note and "--sweep" in note


def test_cli_sweep_writes_json_and_html_sections(tmp_path) -> None:
    out_json, out_html = tmp_path / "s.json", tmp_path / "s.html"
    proc = subprocess.run([sys.executable, "-m", "recall_lab.harness.cli", "matrix", "--trials", "2", "--seed", "4",
                           "--mode", "cloud", "--scenario", "delayed-send-gmail", "--scenario", "unopened",
                           "--sweep", "recall-delay=5,60", "--json", str(out_json), "--html", str(out_html)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "Success against a fixed recall delay" in proc.stdout
    flat = " ".join(proc.stdout.split())
    assert "(measured; recall delay uniform 1 min-15 min unless noted below)" in flat
    assert "except delayed-send-gmail: exponential, mean 30 s" in flat
    data = json.loads(out_json.read_text())
    assert [row["scenario"] for row in data["table"]] == ["unopened", "delayed-send-gmail"]
    assert data["recall_delay"]["table"] == "uniform 1 min-15 min"
    curves = {c["scenario"]: c["modes"]["cloud"] for c in data["sweep"]["conditions"]}
    assert [(p["recall_delay"], p["successes"]) for p in curves["delayed-send-gmail"]] == [(5.0, 2), (60.0, 0)]
    assert [(p["recall_delay"], p["successes"]) for p in curves["unopened"]] == [(5.0, 2), (60.0, 2)]
    page = out_html.read_text()
    assert "Success against a fixed recall delay (sweep)" in page
    assert page.count("FillBetweenPolyCollection") >= 2  # a band per condition


def test_cli_bad_sweep_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["matrix", "--sweep", "open-delay=5"])
    _out, err = capsys.readouterr()
    assert info.value.code == 2 and err.startswith("recall-lab: --sweep: expected recall-delay=") \
        and err.count("\n") == 1


def test_cli_explain_prints_every_source(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["matrix", "--explain", "--scenario", "web-client"])
    out, _err = capsys.readouterr()
    assert info.value.code in (0, None)
    assert "page_load_interval: exponential, mean 15 min" in out
    assert "source: fit to Kooti et al. 2015" in out and "source: assumption: no data on how fast a sender" in out
