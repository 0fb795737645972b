"""The measured table in the article's form: Condition | the article's word | likelihood and rate, per recall mode.

Why two renderings of one table: the terminal gets a rich table (colour for the likelihood words), tests and
files get the same rows as plain text (`table_text`, `table_markdown`); all come from `table_rows` and
`table_notes`, so they cannot disagree.

Why an Article column with footnotes: the article's words are claims about real mail systems, the measured ones
are what this lab's servers did under stated assumptions. Where they differ the reader is owed the reason, next
to the row (`Scenario.article_note`), not a silent contradiction.

Why ranges ("Moderate-High"): the word comes from the 95% interval (stats.likelihood_word), so it does not flip
when another seed moves the rate across a threshold; a range says the trials cannot tell yet, and
`settle_notes` says how many trials would.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

from recall_lab.fake_servers.recall.modes import TITLES
from recall_lab.harness.scenarios.model import Scenario
from recall_lab.harness.scenarios.results import MatrixResult
from recall_lab.harness.scenarios.stats import NONE_BELOW, trials_to_settle, word_bands

_STYLE = {"High": "bold green", "Moderate": "yellow", "Low": "red", "None": "bold red", "-": "dim"}


@dataclass(frozen=True)
class ArticleDifference:
    """A row whose measured word, in some mode, does not include the article's word."""

    number: int  # the footnote's number, from 1 in table order
    scenario: Scenario
    measured: dict[str, str]  # mode -> measured word

    @property
    def marker(self) -> str:
        return f"[{self.number}]"

    def text(self) -> str:
        measured = ", ".join(f"{word} ({TITLES.get(mode, mode)})" for mode, word in self.measured.items())
        why = self.scenario.article_note or f"The article says {self.scenario.article_word}."
        return f"{self.marker} {self.scenario.condition}: measured {measured}. {why}"


def _measured(result: MatrixResult, s: Scenario) -> dict[str, str]:
    out = {}
    for mode in result.modes:
        cell = result.cells.get((s.name, mode))
        if cell is not None and cell.trials:
            out[mode] = cell.rate.likelihood
    return out


def article_differences(result: MatrixResult) -> list[ArticleDifference]:
    """The rows where the article's word is not among the bands a measured word names, numbered in order."""
    out: list[ArticleDifference] = []
    for s in result.scenarios:
        if s.article_word is None:
            continue
        measured = _measured(result, s)
        if any(s.article_word not in word_bands(word) for word in measured.values()):
            out.append(ArticleDifference(len(out) + 1, s, measured))
    return out


def table_rows(result: MatrixResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows as strings: Condition, Article, then (Likelihood, rate [95% CI]) per mode, then Trials.

    The Article cell is the article's word ("-" for rows the article does not have), with its footnote marker
    (`[1]`) where the measured word differs; `table_notes` holds the footnotes.
    """
    header = ["Condition", "Article"]
    for mode in result.modes:
        title = TITLES.get(mode, mode)
        header += [f"Likelihood ({title})", f"Rate [95% CI] ({title})"]
    header.append("Trials")
    markers = {d.scenario.name: d.marker for d in article_differences(result)}
    rows = []
    for s in result.scenarios:
        article = s.article_word or "-"
        if s.name in markers:
            article += f" {markers[s.name]}"
        row = [s.condition, article]
        counts = []
        for mode in result.modes:
            cell = result.cells.get((s.name, mode))
            if cell is None or not cell.trials:
                row += ["-", "-"]
                continue
            rate = cell.rate
            row += [rate.likelihood, rate.text()]
            counts.append(rate.trials)
        row.append(str(counts[0]) if counts and len(set(counts)) == 1 else "/".join(map(str, counts)) or "0")
        rows.append(row)
    return header, rows


#: How the residue lines name each kind of copy out of reach (clients/outcome.py's ESCAPE_KINDS).
_ESCAPED = {"forwarded": "forwarded", "auto-forwarded": "auto-forwarded", "quoted-in-reply": "quoted in a reply",
            "lock-screen": "seen on a lock screen", "phone-sync": "synced to a phone"}


def residue_notes(result: MatrixResult) -> list[str]:
    """What "recalled" leaves behind, per row where something is: how many trials (of each mode) left the message
    recoverable by the organisation, read before the recall, or with a copy out of any recall's reach. The rate
    counts a trial as recalled when the user can no longer see it and never read it; these lines say what exists
    all the same (a lock-screen preview, a forward, Recoverable Items)."""
    out = []
    for s in result.scenarios:
        parts = []
        for mode in result.modes:
            cell = result.cells.get((s.name, mode))
            if cell is None or not cell.trials:
                continue
            counts = cell.residue_counts()
            n = len(cell.trials)
            bits = []
            if counts.get("recoverable"):
                held = f", {counts['held']} under hold" if counts.get("held") else ""
                bits.append(f"recoverable by the organisation {counts['recoverable']}/{n}{held}")
            escaped = [f"{_ESCAPED.get(k, k)} {counts[k]}" for k in _ESCAPED if counts.get(k)]
            if escaped:
                bits.append(f"out of reach {counts.get('out_of_reach', 0)}/{n} ({', '.join(escaped)})")
            if bits:
                parts.append(f"{mode}: " + "; ".join(bits))
        if parts:
            out.append(f"{s.condition}: " + " | ".join(parts))
    return out


def table_notes(result: MatrixResult) -> list[str]:
    """One footnote per row whose measured word differs from the article's: what was measured, and why."""
    return [d.text() for d in article_differences(result)]


@dataclass(frozen=True)
class Unsettled:
    """A cell whose interval straddles a threshold, and the trials that would settle it at its measured rate."""

    scenario: str
    condition: str
    mode: str
    word: str
    rate: float
    trials: int
    settle_at: int | None  # None: the rate sits on a threshold and no trial count settles it


def unsettled_cells(result: MatrixResult) -> list[Unsettled]:
    """Every cell whose word is a range, in table order."""
    out = []
    for s in result.scenarios:
        for mode in result.modes:
            cell = result.cells.get((s.name, mode))
            if cell is None or not cell.trials or not cell.rate.straddles:
                continue
            r = cell.rate
            out.append(Unsettled(s.name, s.condition, mode, r.likelihood, r.rate, r.trials, trials_to_settle(r.rate)))
    return out


def settle_notes(result: MatrixResult) -> list[str]:
    """One line per row with a range word: the trials per cell that would settle it, if the rate held."""
    by_row: dict[str, list[Unsettled]] = {}
    for u in unsettled_cells(result):
        by_row.setdefault(u.condition, []).append(u)
    lines = []
    for condition, cells in by_row.items():
        same: dict[tuple[str, float, int | None], list[str]] = {}
        for u in cells:
            same.setdefault((u.word, u.rate, u.settle_at), []).append(u.mode)
        parts = []
        for (word, rate, settle_at), modes in same.items():
            at = f"about {settle_at}" if settle_at else "none (the rate is on a threshold)"
            parts.append(f"{' and '.join(modes)} {word} at {rate:.2f}: {at}")
        lines.append(f"{condition}: {'; '.join(parts)}")
    return lines


def _style(word: str) -> str:
    bands = word_bands(word)
    if len(bands) > 1:
        return _STYLE[bands[0]].replace("bold ", "") + " italic"
    return _STYLE.get(word, "")


def _styled(cell: str) -> str:
    word, _, marker = cell.partition(" ")
    style = _style(word)
    text = f"[{style}]{word}[/]" if style else word
    return f"{text} {marker}" if marker else text


def render_table(result: MatrixResult, title: str | None = None) -> Table:
    header, rows = table_rows(result)
    table = Table(title=title or "Likelihood of a successful recall (measured)", title_justify="left",
                  show_lines=False, header_style="bold")
    table.add_column(header[0], overflow="fold", min_width=24)
    table.add_column(header[1], no_wrap=True)
    for name in header[2:-1]:
        what, _, mode = name.partition(" (")
        table.add_column(f"{mode.rstrip(')')}\n{what}", justify="left" if what == "Likelihood" else "right",
                         no_wrap=True)
    table.add_column(header[-1], justify="right")
    for row in rows:
        cells = [row[0], _styled(row[1])]
        for i, value in enumerate(row[2:-1]):
            cells.append(_styled(value) if i % 2 == 0 else value)
        cells.append(row[-1])
        table.add_row(*cells)
    return table


def table_text(result: MatrixResult) -> str:
    """The table as a Markdown-style text table (for files, logs and tests)."""
    header, rows = table_rows(result)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out) + "\n"


def table_markdown(result: MatrixResult) -> str:
    """The table and its footnotes as Markdown (each footnote its own paragraph): what the README shows."""
    notes = table_notes(result)
    return table_text(result) + "".join(f"\n{note}\n" for note in notes)


LEGEND = ("Likelihood: the bands that the interval (Wilson score, 95%) of the share of `recalled` trials lies in: "
          f"High >= 0.80, Moderate >= 0.40, Low >= {NONE_BELOW}, None below; two words (Moderate-High) when it "
          "straddles a threshold (more trials would settle it); None when every trial failed. "
          "Article: the article's word for its four rows.")
