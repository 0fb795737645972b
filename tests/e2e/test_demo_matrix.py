"""`recall-lab demo` and `recall-lab matrix` read as a teacher and a machine would read them.

The demo runs once at its defaults (it is the README's first command); its story and its closing table are
checked against the JSON it writes alongside, so the printed figures are the measured ones. How long it takes
is not tested here (a loaded machine is slow for reasons that are not bugs): scripts/bench_demo.py measures it
against its 30 s budget.
"""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser

import pytest

from recall_lab.harness.scenarios.catalogue import builtin_scenarios

from .conftest import run_cli

LIKELIHOODS = ("High", "Moderate", "Low", "None")
RATE = re.compile(r"^(\d\.\d\d) \[(\d\.\d\d)-(\d\.\d\d)\]$")


def band_of(rate: float) -> str:
    """The band of a rate, as the demo's legend states it (None below 0.005)."""
    if rate >= 0.80:
        return "High"
    if rate >= 0.40:
        return "Moderate"
    return "Low" if rate >= 0.005 else "None"


def word_of(successes: int, trials: int) -> str:
    """The legend's rule: the bands of the interval's two ends; None when every trial failed."""
    lo, hi = wilson(successes, trials)
    if successes == 0 or hi < 0.005:
        return "None"
    low, high = band_of(lo), band_of(hi)
    return low if low == high else f"{low}-{high}"


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval the table says it prints (computed here independently)."""
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - margin), min(1.0, centre + margin)


def parse_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The rich table at the end of the output: (header cells, rows), wrapped condition cells joined."""
    lines = [line for line in text.splitlines() if line.startswith(("┃", "│"))]
    header_lines = [[c.strip() for c in line.strip("┃").split("┃")] for line in lines if line.startswith("┃")]
    header = [" ".join(filter(None, col)) for col in zip(*header_lines, strict=True)]
    rows: list[list[str]] = []
    for line in lines:
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if rows and not any(cells[1:]):
            rows[-1][0] += " " + cells[0]
        else:
            rows.append(cells)
    return header, rows


def test_demo_tells_the_story_and_ends_with_the_measured_table(tmp_path):
    result = run_cli("demo", "--json", str(tmp_path / "demo.json"), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    measured = json.loads((tmp_path / "demo.json").read_text())
    conditions = [row["condition"] for row in measured["table"]]
    assert len(conditions) >= 4

    # the walk: one numbered section per condition, in the table's order, each ending with both modes
    sections = re.split(r"^(\d+)\. ", out, flags=re.M)[1:]
    titles = [sections[i + 1].splitlines()[0].rstrip(" ─") for i in range(0, len(sections), 2)]
    assert titles == conditions
    article = ("The recipient has not opened the email", "The recipient uses the same organisation's server",
               "The recipient uses a web client, static page (the article's)", "The recipient uses a different email provider")
    for condition in article:
        assert any(t.startswith(condition) for t in titles), condition
    for i in range(0, len(sections), 2):
        body = sections[i + 1]
        assert re.search(r"^\s+=> cloud\s*: ", body, re.M) and re.search(r"^\s+=> legacy\s*: ", body, re.M), body

    # the protocol lines that explain the outcomes
    assert re.search(r"C: Message-ID: <trial\.[^>]+@corp\.example>", out)
    assert re.search(r"C: Subject: Recall: ", out)
    assert re.search(r"C: X-Recall-Message-ID: <trial\.", out)
    assert re.search(r"S: \* (VANISHED \d|\d+ EXPUNGE)", out), "the EXPUNGE/VANISHED the desktop client hears"
    assert "would like to recall the message" in out, "what the external provider's user reads"
    assert re.search(r"web page.*still shows it", out), "the web page that keeps showing a recalled message"
    assert re.search(r"C: Subject: Recall (Success|Failure): ", out), "QA F11: a legacy client reporting back"

    # the table: Condition | Article | Likelihood | rate [95% CI] per mode | Trials, and it is the measured one
    header, rows = parse_table(out)
    assert header == ["Condition", "Article", "cloud recall Likelihood", "cloud recall Rate [95% CI]",
                      "legacy recall Likelihood", "legacy recall Rate [95% CI]", "Trials"]
    assert [r[0] for r in rows] == conditions
    for row, data in zip(rows, measured["table"], strict=True):
        assert row[1].split(" ")[0] == (data["article_word"] or "-")
        for likelihood, rate_text, mode in ((row[2], row[3], "cloud"), (row[4], row[5], "legacy")):
            m = RATE.match(rate_text)
            assert m, rate_text
            rate, lo, hi = (float(g) for g in m.groups())
            assert lo <= rate <= hi
            assert likelihood == word_of(data[mode]["successes"], data[mode]["trials"]), (row[0], mode, rate)
            assert set(likelihood.split("-")) <= set(LIKELIHOODS)
            assert rate == pytest.approx(data[mode]["rate"], abs=0.005)
            assert data[mode]["successes"] == round(rate * data[mode]["trials"])
            want_lo, want_hi = wilson(data[mode]["successes"], data[mode]["trials"])
            assert (lo, hi) == (pytest.approx(want_lo, abs=0.006), pytest.approx(want_hi, abs=0.006)), rate_text
        assert int(row[6]) == data["cloud"]["trials"] == data["legacy"]["trials"] == 20
    by_condition = {r[0]: r for r in rows}
    assert by_condition["The recipient uses a different email provider"][2] == "None", \
        "a recall cannot reach another provider"
    assert by_condition["The recipient has not opened the email"][2] == "High"


@pytest.fixture(scope="module")
def short_demo():
    """The walk alone, for three conditions: what a teacher reads, cheaply."""
    result = run_cli("demo", "--no-table", "--scenario", "same-org-desktop", "--scenario", "external-provider",
                     "--scenario", "legal-hold", timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_demo_report_lines_are_readable_text(short_demo):
    """QA F6 (fixed): report lines were shown with quoted-printable soft breaks (`ordinar=`)."""
    assert "<- a line of" in short_demo
    assert not re.search(r"=\s+<- a line of the report", short_demo)


def test_demo_never_narrates_a_bare_event_name(short_demo):
    """QA F7 (fixed): an open after the recall was narrated as `open      open`."""
    bare = [line for line in short_demo.splitlines() if re.match(r"^\s+t=\S+\s+(\w[\w-]*)\s+\1\s*$", line)]
    assert not bare, bare
    assert re.search(r"t=\S+\s+open\s+\S", short_demo)


class _Assets(HTMLParser):
    """Every URL the page would fetch, and whether it has an inline SVG."""

    def __init__(self) -> None:
        super().__init__()
        self.fetched: list[str] = []
        self.svg = 0
        self.pre_text: list[str] = []
        self._in_pre = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self.svg += 1
        if tag == "pre":
            self._in_pre = True
        for key in ("src", "href", "data"):
            value = attrs.get(key) or ""
            if tag in ("script", "img", "link", "iframe", "object", "embed", "source", "image", "use") \
                    and re.match(r"^(https?:)?//", value):
                self.fetched.append(f"<{tag} {key}={value}>")

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_pre = False

    def handle_data(self, data):
        if self._in_pre:
            self.pre_text.append(data)


def test_matrix_json_and_self_contained_html(tmp_path):
    out_json, out_html = tmp_path / "m.json", tmp_path / "m.html"
    result = run_cli("matrix", "--trials", "2", "--seed", "1", "--json", str(out_json), "--html", str(out_html),
                     timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads(out_json.read_text())
    assert data["seed"] in (1, "1") and data["trials_per_cell"] == 2
    names = [row["scenario"] for row in data["table"]]
    assert names == [s.name for s in sorted(builtin_scenarios(), key=lambda s: (s.order, s.name))]  # every row
    assert {"unopened", "web-client", "web-client-live", "external-provider"} <= set(names)
    assert len(data["trials"]) == 2 * 2 * len(names)
    assert {t["message_id"] for t in data["trials"]}.__len__() == len(data["trials"]), "one message per trial"
    for row in data["table"]:
        for mode in ("cloud", "legacy"):
            cell = row[mode]
            assert cell["trials"] == 2 and cell["successes"] == cell["verdicts"]["recalled"]
            lo, hi = cell["ci95"]
            assert 0 <= lo <= cell["rate"] <= hi <= 1
            want_lo, want_hi = wilson(cell["successes"], cell["trials"])
            assert (lo, hi) == (pytest.approx(want_lo, abs=1e-3), pytest.approx(want_hi, abs=1e-3))
    external = next(r for r in data["table"] if r["scenario"] == "external-provider")
    assert external["cloud"]["verdicts"]["impossible"] == 2

    page = out_html.read_text()
    parser = _Assets()
    parser.feed(page)
    assert parser.fetched == [], "the report must not fetch anything from the network"
    assert not re.search(r"""url\(\s*['"]?(https?:)?//""", page), "no remote CSS assets"
    assert not re.search(r"@import", page)
    assert parser.svg >= 1, "an inline SVG plot"
    assert "Success against recall delay" in page or "recall delay" in page
    transcripts = "".join(parser.pre_text)
    for name in names:
        assert f'id="{name}"' in page, name
    assert "AUTH PLAIN" in transcripts and "X-Recall-Message-ID" in transcripts
    assert not re.search(r"[a-z0-9]+-password", page), "credentials are masked in transcripts"
    assert re.search(r"LOGIN \S+@corp\.example \*+", page) or "AUTH PLAIN ****" in page
