"""The README's table is the output of the command stated next to it.

The test reads the command from the README itself (rows change whenever a scenario or a client model does; the
command and its table move together), runs it as a user would, and compares the README's rows (rates, words,
the article's words) and footnotes with what it printed. When they differ, `python scripts/readme_table.py`
rewrites the README's table from the command.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BEGIN = re.compile(r"^<!-- table: begin\b.*-->$", re.M)
END = re.compile(r"^<!-- table: end -->$", re.M)
COMMAND = re.compile(r"^    (recall-lab [^\n]+?)\s*$", re.M)
FOOTNOTE = re.compile(r"^\[\d+\] ")


def readme_parts(text: str) -> tuple[str, str]:
    """(the command stated before the table, the text between the markers)."""
    begin, end = BEGIN.search(text), END.search(text)
    assert begin and end and begin.end() < end.start(), "README.md lacks the table's begin/end markers"
    commands = COMMAND.findall(text[:begin.start()])
    assert commands, "README.md states no indented `recall-lab ...` command before its table"
    return commands[-1], text[begin.end():end.start()]


def parse(block: str) -> tuple[list[list[str]], list[str]]:
    """Table rows (cells stripped, the separator line dropped) and footnotes of a Markdown block."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()
            if line.startswith("|") and not re.fullmatch(r"\|[-| ]+\|", line.strip())]
    notes = [" ".join(line.split()) for line in block.splitlines() if FOOTNOTE.match(line)]
    return rows, notes


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_table", ROOT / "scripts" / "readme_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_is_the_output_of_its_command() -> None:
    command, block = readme_parts(README.read_text(encoding="utf-8"))
    argv = shlex.split(command)
    assert argv[:2] in (["recall-lab", "demo"], ["recall-lab", "matrix"]), command
    result = run_cli(*argv[1:], timeout=600)
    assert result.returncode == 0, result.stderr
    want_rows, want_notes = parse(result.stdout)
    have_rows, have_notes = parse(block)
    assert want_rows and want_rows[0][:2] == ["Condition", "Article"], result.stdout
    hint = "the README's table is stale: run `python scripts/readme_table.py`"
    assert have_rows[0] == want_rows[0], hint
    have = {row[0]: row for row in have_rows[1:]}
    want = {row[0]: row for row in want_rows[1:]}
    assert list(have) == list(want), hint
    for condition, row in want.items():
        assert have[condition] == row, f"{hint}\n  README:  {have[condition]}\n  command: {row}"
    assert have_notes == want_notes, hint
    trials = argv[argv.index("-n") + 1] if "-n" in argv else None
    if trials is not None:
        assert {row[-1] for row in want_rows[1:]} == {trials}, "the Trials column is the command's -n"


def test_the_script_finds_the_command_and_rewrites_only_the_block() -> None:
    script = load_script()
    text = ("intro\n\n    recall-lab demo --version-one\n\nthen\n\n    recall-lab demo --no-walk --markdown -n 3\n\n"
            f"{script.BEGIN}\n| old |\n{script.END}\n\nafter\n")
    assert script.find_command(text) == "recall-lab demo --no-walk --markdown -n 3"
    assert script.current_block(text) == "| old |\n"
    new = script.replace_block(text, "| new |\n\n[1] note\n")
    assert new == text.replace("| old |\n", "| new |\n\n[1] note\n")
    assert readme_parts(new) == ("recall-lab demo --no-walk --markdown -n 3", "\n| new |\n\n[1] note\n")
    with pytest.raises(script.ReadmeError, match="no .*block"):
        script.find_command("no markers here\n")
    with pytest.raises(script.ReadmeError, match="no indented"):
        script.find_command(f"{script.BEGIN}\n{script.END}\n")


def test_readme_markers_match_the_scripts() -> None:
    script = load_script()
    text = README.read_text(encoding="utf-8")
    assert text.count(script.BEGIN) == 1 and text.count(script.END) == 1
    assert script.find_command(text) == readme_parts(text)[0]


def test_markdown_demo_prints_only_the_table_on_stdout() -> None:
    result = run_cli("demo", "--no-walk", "--markdown", "-n", "2", "-s", "1", "--scenario", "web-client",
                     "--scenario", "external-provider", timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| Condition ") and "Article" in lines[0]
    assert all(line.startswith("|") or FOOTNOTE.match(line) or not line for line in lines), result.stdout
    assert "Likelihood: the bands" in result.stderr and "recall-lab demo" in result.stderr
    rows, _ = parse(result.stdout)
    assert [row[0] for row in rows[1:]] == ["The recipient uses a web client, static page (the article's)",
                                            "The recipient uses a different email provider"]
