"""The table, the JSON form and the HTML report, from a result built by hand (no lab needed)."""

import html
import json
import re

import pytest

from recall_lab.harness.report import load_json, render_html, table_text, write_json
from recall_lab.harness.report.plot import binned_success, success_by_delay_svg
from recall_lab.harness.scenarios import find_scenario
from recall_lab.harness.scenarios.results import MatrixResult, TrialResult


def _trial(scenario: str, mode: str, i: int, verdict: str, recall_at: float = 300.0, client: str = "desktop",
           kind: str = "organisation") -> TrialResult:
    return TrialResult(scenario=scenario, mode=mode, index=i, seed=f"1:{scenario}:{i}", client=client,
                       recipient_kind=kind, recall_at=recall_at, verdict=verdict, report_status="recalled",
                       read_before_recall=False, preview_seen=True, server_copy=False, client_copy=False,
                       events=("0 send", f"{recall_at:.0f} recall"), message_id=f"<t{i}@corp.example>")


@pytest.fixture
def result() -> MatrixResult:
    scenarios = [find_scenario("same-org-desktop"), find_scenario("web-client"), find_scenario("external-provider")]
    r = MatrixResult(seed=1, trials_per_cell=10, scenarios=scenarios)
    for i in range(10):
        r.add(_trial("same-org-desktop", "cloud", i, "recalled" if i < 9 else "partial", 60 * (i + 1)))
        r.add(_trial("same-org-desktop", "legacy", i, "recalled" if i < 8 else "failed", 60 * (i + 1)))
        r.add(_trial("web-client", "cloud", i, "recalled" if i < 5 else "partial", 60 * (i + 1), client="web"))
        r.add(_trial("web-client", "legacy", i, "failed", 60 * (i + 1), client="web"))
        r.add(_trial("external-provider", "cloud", i, "impossible", kind="external"))
        r.add(_trial("external-provider", "legacy", i, "impossible", kind="external"))
    r.transcripts["web-client"] = ["imap#1 S: * VANISHED 1", "smtp#2 C: <script>alert(1)</script>"]
    r.elapsed = 1.5
    return r


def test_table_text_has_the_articles_form(result: MatrixResult) -> None:
    text = table_text(result)
    lines = text.splitlines()
    assert lines[0].split("|")[1].strip() == "Condition"
    assert "Likelihood (cloud recall)" in lines[0] and "Rate [95% CI] (legacy recall)" in lines[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[2:]}
    # words from the interval (ranges where it straddles a threshold); the article's word, marked where it differs
    assert rows["The recipient uses the same organisation's server (desktop client)"] == [
        "High", "Moderate-High", "0.90 [0.60-0.98]", "Moderate-High", "0.80 [0.49-0.94]", "10"]
    assert rows["The recipient uses a web client, static page (the article's)"] == [
        "Low [1]", "Low-Moderate", "0.50 [0.24-0.76]", "None", "0.00 [0.00-0.28]", "10"]
    assert rows["The recipient uses a different email provider"] == [
        "None", "None", "0.00 [0.00-0.28]", "None", "0.00 [0.00-0.28]", "10"]


def test_json_round_trip(result: MatrixResult, tmp_path) -> None:
    path = write_json(result, tmp_path / "out.json")
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["interval"]["method"] == "wilson"
    web = next(row for row in data["table"] if row["scenario"] == "web-client")
    assert web["cloud"]["likelihood"] == "Low-Moderate" and web["cloud"]["successes"] == 5
    assert web["cloud"]["likelihood_of_rate"] == "Moderate" and web["article_word"] == "Low"
    assert web["cloud"]["ci95"] == [0.2366, 0.7634]
    assert web["legacy"]["verdicts"] == {"recalled": 0, "partial": 0, "failed": 10, "impossible": 0}
    assert len(data["trials"]) == 60
    again = load_json(path)
    assert table_text(again) == table_text(result)
    assert again.transcripts == result.transcripts


def test_html_is_self_contained_and_escaped(result: MatrixResult) -> None:
    page = render_html(result)
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<svg" in page and "<script" not in page.replace("&lt;script&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"""<link\b|@import|url\(\s*["']?https?:""", page)
    assert "* VANISHED 1" in page
    assert html.escape("The recipient uses a web client, static page (the article's)") in page and "Moderate" in page


def test_plot_bins_success_by_delay(result: MatrixResult) -> None:
    web = [t for t in result.all_trials() if t.scenario == "web-client" and t.mode == "cloud"]
    points = binned_success(web)
    assert sum(n for _x, _y, n in points) == 10
    assert points[0][1] == 1.0 and points[-1][1] == 0.0  # early recalls succeed, late ones do not
    svg = success_by_delay_svg(result)
    assert svg.startswith("<svg") and "<metadata>" not in svg


def test_residue_notes_say_what_recalled_leaves_behind() -> None:
    """A trial counted as recalled may still have left a lock-screen preview or a copy in Recoverable Items; the
    lines under the table say how many, per mode, and say nothing for a row that left nothing."""
    from dataclasses import replace

    from recall_lab.harness.report.table import residue_notes

    r = MatrixResult(seed=1, trials_per_cell=4, scenarios=[find_scenario("lock-screen"), find_scenario("unopened")])
    seen = {"gone_from_every_view": True, "recoverable": True, "held": False, "read_before_recall": False,
            "escapes": [{"kind": "lock-screen", "where": "bob's phone", "holds": "subject and first line"}]}
    for i in range(4):
        r.add(replace(_trial("lock-screen", "cloud", i, "recalled"), residue=seen if i < 3 else {}))
        r.add(_trial("unopened", "cloud", i, "recalled"))
    [line] = residue_notes(r)
    assert line.startswith(find_scenario("lock-screen").condition + ": cloud: ")
    assert "recoverable by the organisation 3/4" in line and "out of reach 3/4 (seen on a lock screen 3)" in line
