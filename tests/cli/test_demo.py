"""`recall-lab demo` end to end, as a user runs it: a subprocess against the default lab."""

import re
import subprocess
import sys

import pytest

from recall_lab.harness.cli import main
from recall_lab.harness.scenarios.catalogue import builtin_scenarios

#: The conditions the demo walks and measures (the others are `recall-lab matrix` rows only).
DEMO_ROWS = len([s for s in builtin_scenarios() if s.demo])


@pytest.fixture(scope="module")
def demo_output() -> str:
    proc = subprocess.run([sys.executable, "-m", "recall_lab.harness.cli", "demo", "--trials", "2"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def test_walks_every_condition_in_table_order(demo_output: str) -> None:
    headings = re.findall(r"^(\d+)\. (.+?) ─", demo_output, flags=re.MULTILINE)
    assert [h[1] for h in headings][:4] == [
        "The recipient has not opened the email",
        "The recipient uses the same organisation's server (desktop client)",
        "The recipient uses a web client, static page (the article's)",
        "The recipient uses a different email provider",
    ]
    assert len(headings) == DEMO_ROWS


def test_shows_the_protocol_lines_that_matter(demo_output: str) -> None:
    assert re.search(r"C: Message-ID: <trial\.unopened\.cloud\.0\.\d+@corp\.example>", demo_output)
    assert re.search(r"C: Subject: Recall: Quarterly figures", demo_output)
    assert re.search(r"C: X-Recall-Message-ID: <trial\.", demo_output)
    assert re.search(r"S: \* (VANISHED \d+|\d+ EXPUNGE)", demo_output)  # what the desktop client hears
    assert "the web page, loaded before the recall, still shows it" in demo_output
    assert re.search(r'body: "Alice would like to recall the message, "Quarterly figures', demo_output)
    assert "deletes it from her Outbox" in demo_output  # delayed send: cancelled inside the window


def test_each_condition_ends_with_both_modes(demo_output: str) -> None:
    assert demo_output.count("=> cloud :") == DEMO_ROWS and demo_output.count("=> legacy:") == DEMO_ROWS
    assert "=> cloud : impossible" in demo_output  # the external provider
    assert "=> legacy: failed, report: failed-moved" in demo_output  # moved by a rule


def test_ends_with_the_measured_table(demo_output: str) -> None:
    table = demo_output[demo_output.index("The table, measured"):]
    assert "Condition" in table and "cloud recall" in table and "legacy recall" in table
    # Condition | Article | Likelihood | rate ... (a long condition wraps; its cells are on its first line)
    assert re.search(r"different email(?: provider)?\s*│\s*None\s*│\s*None\s*│\s*0\.00 \[0\.00-0\.66\]\s*│\s*None",
                     table)
    # 2 of 2: the interval [0.34-1.00] straddles two thresholds, and the article's High lies inside it
    assert re.search(r"has not opened the(?: email)?\s*│\s*High\s*│\s*Low-High\s*│\s*1\.00 \[0\.34-1\.00\]", table)
    assert "Wilson score, 95%" in table
    assert re.search(rf"{2 * 2 * DEMO_ROWS} trials in [\d.]+ s; demo took [\d.]+ s\.", table)


def test_demo_unknown_scenario_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--scenario", "nope"])
    _out, err = capsys.readouterr()
    assert info.value.code == 2 and err.startswith("recall-lab: unknown scenario 'nope'") and err.count("\n") == 1
