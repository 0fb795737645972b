"""The measured table in the article's form: Condition | Likelihood of success | measured rate, per recall mode.

Why two renderings of one table: the terminal gets a rich table (colour for the likelihood words), tests and
files get the same rows as plain text; both come from `table_rows`, so they cannot disagree.
"""

from __future__ import annotations

from rich.table import Table

from recall_lab.fake_servers.recall.modes import TITLES
from recall_lab.harness.scenarios.results import MatrixResult

_STYLE = {"High": "bold green", "Moderate": "yellow", "Low": "red", "None": "bold red", "-": "dim"}


def table_rows(result: MatrixResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows as strings: Condition, then (Likelihood, rate [95% CI]) per mode, then Trials."""
    header = ["Condition"]
    for mode in result.modes:
        title = TITLES.get(mode, mode)
        header += [f"Likelihood ({title})", f"Rate [95% CI] ({title})"]
    header.append("Trials")
    rows = []
    for s in result.scenarios:
        row = [s.condition]
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


def render_table(result: MatrixResult, title: str | None = None) -> Table:
    header, rows = table_rows(result)
    table = Table(title=title or "Likelihood of a successful recall (measured)", title_justify="left",
                  show_lines=False, header_style="bold")
    table.add_column(header[0], overflow="fold", min_width=24)
    for name in header[1:-1]:
        what, _, mode = name.partition(" (")
        table.add_column(f"{mode.rstrip(')')}\n{what}", justify="left" if what == "Likelihood" else "right",
                         no_wrap=True)
    table.add_column(header[-1], justify="right")
    for row in rows:
        cells = [row[0]]
        for i, value in enumerate(row[1:-1]):
            if i % 2 == 0:
                cells.append(f"[{_STYLE.get(value, '')}]{value}[/]" if value in _STYLE else value)
            else:
                cells.append(value)
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


LEGEND = ("Likelihood from the measured rate of trials whose verdict is `recalled`: High >= 0.80, "
          "Moderate >= 0.40, Low > 0, None = 0. Interval: Wilson score, 95%.")
