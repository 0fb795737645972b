"""The article's word next to the measured ones: where they differ the table, its text, the HTML report and the
JSON say so and why; where the measured range includes the article's word they do not."""

from __future__ import annotations

import dataclasses
import json

import pytest

from recall_lab.harness.report import render_html, table_text, write_json
from recall_lab.harness.report.table import (
    article_differences,
    render_table,
    settle_notes,
    table_markdown,
    table_notes,
    table_rows,
    unsettled_cells,
)
from recall_lab.harness.scenarios import builtin_scenarios, find_scenario, load_scenario_data
from recall_lab.harness.scenarios.distributions import ScenarioError
from recall_lab.harness.scenarios.results import MatrixResult, TrialResult


def _trial(scenario: str, mode: str, i: int, success: bool) -> TrialResult:
    return TrialResult(scenario=scenario, mode=mode, index=i, seed=f"1:{scenario}:{i}", client="desktop",
                       recipient_kind="organisation", recall_at=60.0 * (i + 1),
                       verdict="recalled" if success else "failed", report_status="", read_before_recall=False,
                       preview_seen=False, server_copy=not success, client_copy=not success,
                       events=("0 send",), message_id=f"<t{i}@corp.example>")


def _result(counts: dict[tuple[str, str], int], trials: int = 20) -> MatrixResult:
    """`counts[(scenario, mode)]` successes out of `trials` for each cell."""
    names = list(dict.fromkeys(name for name, _ in counts))
    r = MatrixResult(seed=1, trials_per_cell=trials, scenarios=[find_scenario(n) for n in names])
    for (name, mode), k in counts.items():
        for i in range(trials):
            r.add(_trial(name, mode, i, i < k))
    return r


def test_the_article_rows_carry_the_articles_words() -> None:
    words = {s.name: s.article_word for s in builtin_scenarios() if s.article}
    assert words == {"unopened": "High", "same-org-desktop": "High", "web-client": "Low",
                     "external-provider": "None"}
    assert all(s.article_note.startswith("The article says") for s in builtin_scenarios() if s.article)
    # A row the article has no line for carries no word, unless one of its four claims covers the row's condition:
    # classic recall with automatic processing off is a same-organisation desktop recipient (the article's High).
    extra = {s.name: s.article_word for s in builtin_scenarios() if not s.article and s.article_word is not None}
    assert extra == {"classic-manual-processing": "High"}
    assert find_scenario("classic-manual-processing").article_note.startswith("The article says High")


def test_article_word_is_checked_and_round_trips() -> None:
    web = find_scenario("web-client")
    assert load_scenario_data(web.to_toml_dict()) == web
    data = web.to_toml_dict() | {"article_word": "Rarely"}
    with pytest.raises(ScenarioError, match="article_word must be one of None, Low, Moderate, High"):
        load_scenario_data(data, "mine.toml")
    with pytest.raises(ScenarioError, match="article_note: expected str"):
        load_scenario_data(web.to_toml_dict() | {"article_note": 3}, "mine.toml")


def test_a_differing_row_gets_a_marker_and_a_footnote_with_the_reason() -> None:
    result = _result({("unopened", "cloud"): 20, ("unopened", "legacy"): 20,
                      ("web-client", "cloud"): 18, ("web-client", "legacy"): 0,
                      ("external-provider", "cloud"): 0, ("external-provider", "legacy"): 0})
    header, rows = table_rows(result)
    assert header[:2] == ["Condition", "Article"]
    by = {row[0]: row[1:] for row in rows}
    assert by["The recipient has not opened the email"][:2] == ["High", "High"]  # agrees: no marker
    assert by["The recipient uses a web client, static page (the article's)"][:2] == ["Low [1]", "Moderate-High"]
    assert by["The recipient uses a different email provider"][:2] == ["None", "None"]
    notes = table_notes(result)
    assert len(notes) == 1
    assert notes[0].startswith("[1] The recipient uses a web client, static page (the article's): measured Moderate-High (cloud recall), "
                               "None (legacy recall). The article says Low for web clients")
    assert "[1]" in table_text(result) and table_markdown(result).endswith("\n\n" + notes[0] + "\n")
    page = render_html(result)
    assert "<th>Article</th>" in page and "Low [1]" in page
    assert "The article says Low for web clients" in page


def test_a_range_that_includes_the_articles_word_is_no_difference() -> None:
    # 19 of 20: Moderate-High includes the article's High; 6 of 20: Low-Moderate includes Low
    result = _result({("same-org-desktop", "cloud"): 19, ("web-client", "cloud"): 6})
    assert article_differences(result) == []
    assert [row[1] for row in table_rows(result)[1]] == ["High", "Low"]
    assert table_markdown(result) == table_text(result)


def test_a_row_without_the_articles_word_says_dash() -> None:
    result = _result({("read-before-recall", "cloud"): 0})
    assert table_rows(result)[1][0][1] == "-"
    assert table_notes(result) == []


def test_the_note_falls_back_to_the_word_alone() -> None:
    bare = dataclasses.replace(find_scenario("external-provider"), article_note="")
    result = MatrixResult(seed=1, trials_per_cell=5, scenarios=[bare])
    for i in range(5):
        result.add(_trial("external-provider", "cloud", i, True))
    assert table_notes(result) == ["[1] The recipient uses a different email provider: measured Moderate-High "
                                   "(cloud recall). The article says None."]


def test_unsettled_cells_say_how_many_trials_would_settle_them() -> None:
    result = _result({("unopened", "cloud"): 20, ("unopened", "legacy"): 19,
                      ("same-org-desktop", "cloud"): 16, ("same-org-desktop", "legacy"): 16})
    cells = unsettled_cells(result)
    assert [(u.scenario, u.mode, u.word, u.settle_at) for u in cells] == [
        ("unopened", "legacy", "Moderate-High", 28),
        ("same-org-desktop", "cloud", "Moderate-High", None), ("same-org-desktop", "legacy", "Moderate-High", None)]
    assert settle_notes(result) == [
        "The recipient has not opened the email: legacy Moderate-High at 0.95: about 28",
        "The recipient uses the same organisation's server (desktop client): cloud and legacy Moderate-High at "
        "0.80: none (the rate is on a threshold)"]


def test_json_carries_the_article_and_both_words(tmp_path) -> None:
    result = _result({("web-client", "cloud"): 19, ("web-client", "legacy"): 0})
    data = json.loads(write_json(result, tmp_path / "out.json").read_text())
    row = data["table"][0]
    assert row["article_word"] == "Low" and row["article_note"].startswith("The article says Low")
    assert row["cloud"]["likelihood"] == "Moderate-High" and row["cloud"]["likelihood_of_rate"] == "High"
    assert row["cloud"]["settle_trials"] == 28 and row["legacy"]["settle_trials"] is None
    assert "straddles" in data["likelihood_rule"]


def test_the_rich_table_has_the_article_column() -> None:
    from rich.console import Console

    result = _result({("web-client", "cloud"): 18, ("web-client", "legacy"): 0})
    console = Console(width=200, record=True, color_system=None)
    console.print(render_table(result))
    text = console.export_text()
    assert "Article" in text and "Low [1]" in text and "Moderate-High" in text
