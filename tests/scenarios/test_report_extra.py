"""matplotlib is the `report` extra, not a core dependency: a core install runs the lab, the demo and the table,
and only the HTML report's plot needs it; without it `--html` fails in one line before any trial runs.

matplotlib is made unimportable for these tests (a None entry in sys.modules in-process, a stand-in package
that raises ImportError for the CLI subprocesses), so they run in the test environment, which has the extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from recall_lab.harness.report import ReportUnavailable, plot_available, render_html
from recall_lab.harness.report.plot import MISSING_MATPLOTLIB, success_by_delay_svg
from recall_lab.harness.scenarios import find_scenario
from recall_lab.harness.scenarios.results import MatrixResult, TrialResult

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def result() -> MatrixResult:
    r = MatrixResult(seed=1, trials_per_cell=1, scenarios=[find_scenario("unopened")])
    r.add(TrialResult(scenario="unopened", mode="cloud", index=0, seed="1:unopened:0", client="desktop",
                      recipient_kind="organisation", recall_at=120.0, verdict="recalled", report_status="recalled",
                      read_before_recall=False, preview_seen=False, server_copy=False, client_copy=False,
                      events=("0 send", "120 recall"), message_id="<t0@corp.example>"))
    return r


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import matplotlib` (and its pyplot) raise ImportError for the rest of the test."""
    for name in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def blocked_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import matplotlib, as after `pip install recall-lab` (no extra)."""
    stand_in = tmp_path / "block" / "matplotlib"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(stand_in.parent), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_core_dependencies_leave_matplotlib_to_the_report_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    extras = project["optional-dependencies"]
    assert "matplotlib" not in core
    assert any(req.startswith("matplotlib") for req in extras["report"])
    assert "recall-lab[report]" in extras["test"], "the test extra must pull in the report extra (CI tests plots)"


def test_the_plot_draws_when_matplotlib_is_there(result: MatrixResult) -> None:
    assert plot_available()
    assert success_by_delay_svg(result).startswith("<svg")


def test_without_matplotlib_the_plot_says_what_to_install(result: MatrixResult, no_matplotlib: None) -> None:
    assert not plot_available()
    with pytest.raises(ReportUnavailable) as caught:
        success_by_delay_svg(result)
    assert str(caught.value) == MISSING_MATPLOTLIB
    assert "pip install 'recall-lab[report]'" in MISSING_MATPLOTLIB and "\n" not in MISSING_MATPLOTLIB
    with pytest.raises(ReportUnavailable):
        render_html(result)


def test_importing_the_reports_needs_no_matplotlib(blocked_env: dict[str, str]) -> None:
    code = "import recall_lab.harness.report, recall_lab.harness.commands.matrix, recall_lab.harness.commands.demo; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], env=blocked_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("command", [["matrix", "--trials", "1", "--scenario", "unopened", "--quiet"],
                                     ["demo", "--trials", "1", "--scenario", "unopened", "--no-walk"]])
def test_html_without_matplotlib_is_one_line_before_any_trial(command: list[str], blocked_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "recall_lab.harness.cli", *command, "--html", str(out)], env=blocked_env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr == f"recall-lab: {MISSING_MATPLOTLIB}\n"
    assert "trials in" not in done.stdout  # stopped before measuring anything
    assert not out.exists()
