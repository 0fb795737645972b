"""The self-contained HTML report of a matrix run (`recall-lab matrix --html FILE`).

Why self-contained: the report is handed around (mailed to a class, attached to a ticket) and opened offline;
it must not fetch anything. Styles are inline, the plot is inline SVG, the transcripts are escaped text. There
is no script, no link, no image URL.

The plot needs matplotlib (the `report` extra); without it render_html raises plot.ReportUnavailable rather than
writing a page that silently lacks the figure the report exists to show.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

from recall_lab.harness.report.plot import delay_label, success_by_delay_svg, sweep_svg
from recall_lab.harness.report.table import LEGEND, residue_notes, settle_notes, table_notes, table_rows
from recall_lab.harness.scenarios.results import VERDICTS, MatrixResult
from recall_lab.harness.scenarios.sweep import SweepResult, recall_delay_note

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.High{color:#1a7f37;font-weight:600}.Moderate{color:#9a6700;font-weight:600}.Low{color:#cf222e}
.None{color:#cf222e;font-weight:700}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:.6em;overflow-x:auto;font-size:.8em;max-height:28em}
.meta{color:#555;font-size:.9em}.legend{font-size:.9em;color:#444}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(result: MatrixResult) -> str:
    header, rows = table_rows(result)
    out = ["<table class=\"results\">", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = [f"<td>{_e(row[0])}</td>", f"<td class=\"article\">{_e(row[1])}</td>"]
        for i, value in enumerate(row[2:-1]):
            if i % 2 == 0:
                cells.append(f"<td class=\"{_e(value)}\">{_e(value)}</td>")
            else:
                cells.append(f"<td class=\"num\">{_e(value)}</td>")
        cells.append(f"<td class=\"num\">{_e(row[-1])}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    out += [f"<p class=\"note\">{_e(note)}</p>" for note in table_notes(result)]
    leftovers = residue_notes(result)
    if leftovers:
        out.append("<p class=\"legend\">What \"recalled\" leaves behind (trials of each mode):</p>"
                   "<ul class=\"legend\">" + "".join(f"<li>{_e(line)}</li>" for line in leftovers) + "</ul>")
    unsettled = settle_notes(result)
    if unsettled:
        out.append("<p class=\"legend\">Ranges: the interval straddles a threshold. Trials per cell that would "
                   "settle each, if its rate held:</p><ul class=\"legend\">"
                   + "".join(f"<li>{_e(line)}</li>" for line in unsettled) + "</ul>")
    return "\n".join(out)


def _scenario_section(result: MatrixResult, index: int) -> str:
    s = result.scenarios[index]
    facts = [
        ("recipient", f"{s.recipient}, {s.client} client"),
        ("recall delay", s.recall_delay.explain()),
        ("opens after", s.open_delay.explain()),
    ]
    if s.move_to:
        facts.append(("rule", f"moves it to {s.move_to}"))
    if s.delete_delay.kind != "never":
        facts.append(("deletes after", s.delete_delay.explain()))
    if s.page_load_interval is not None:
        facts.append(("page loads every", s.page_load_interval.explain()))
    if s.offline_at.kind != "never":
        facts.append(("goes offline at", s.offline_at.explain()))
        facts.append(("offline for", s.offline_for.explain()))
    if s.purge_deleted_after is not None:
        facts.append(("retention", f"Trash purged after {s.purge_deleted_after:g} s"))
    if s.legal_hold:
        facts.append(("legal hold", "yes"))
    if s.delayed_send is not None:
        facts.append(("delayed send", f"{s.delayed_send:g} s in the outbox"))
    facts.append(("observed for", f"{s.observe_for:g} s after the recall"))
    parts = [f"<h3 id=\"{_e(s.name)}\">{_e(s.condition)} <span class=\"meta\">({_e(s.name)})</span></h3>",
             f"<p>{_e(s.summary)}</p>",
             "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts) + "</table>"]
    counts = ["<table><tr><th>mode</th>" + "".join(f"<th>{v}</th>" for v in VERDICTS)
              + "<th>report statuses</th></tr>"]
    for mode in result.modes:
        cell = result.cells.get((s.name, mode))
        if cell is None:
            continue
        vc = cell.verdict_counts()
        statuses: dict[str, int] = {}
        for t in cell.trials:
            statuses[t.report_status or "-"] = statuses.get(t.report_status or "-", 0) + 1
        status_text = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
        counts.append(f"<tr><td>{_e(mode)}</td>" + "".join(f"<td class=\"num\">{vc.get(v, 0)}</td>"
                                                            for v in VERDICTS)
                      + f"<td>{_e(status_text)}</td></tr>")
    counts.append("</table>")
    parts.append("\n".join(counts))
    errors = [t for t in result.all_trials() if t.scenario == s.name and t.error]
    if errors:
        parts.append(f"<p class=\"meta\">{len(errors)} trial(s) failed with an error; first: "
                     f"{_e(errors[0].error)}</p>")
    lines = result.transcripts.get(s.name)
    if lines:
        parts.append("<details><summary>Protocol transcript of trial 0 "
                     f"({len(lines)} lines)</summary><pre>{_e(chr(10).join(lines))}</pre></details>")
    return "\n".join(parts)


def _sweep_section(sweep: SweepResult | None) -> str:
    """The sweep (`matrix --sweep`): its plot and, per condition and mode, the rate at each delay."""
    if sweep is None:
        return ""
    delays = sweep.plan.delays
    head = "<tr><th>condition</th><th>mode</th>" + "".join(f"<th>{_e(delay_label(d))}</th>" for d in delays) + "</tr>"
    rows = []
    for s in sweep.plan.scenarios:
        for mode in sweep.modes:
            points = {p.delay: p for p in sweep.curves.get((s.name, mode), [])}
            if not points:
                continue
            cells = "".join(f"<td class=\"num\">{_e(points[d].rate.text()) if d in points else '-'}</td>"
                            for d in delays)
            rows.append(f"<tr><td>{_e(s.condition)}</td><td>{_e(mode)}</td>{cells}</tr>")
    return f"""<h2>Success against a fixed recall delay (sweep)</h2>
<p class="legend">Each condition run with the recall (or the delayed-send cancel) at fixed delays after the
send, {sweep.trials_per_point} trials per point and mode; everything else sampled as in the table. How fast a
sender notices a mistake has no data behind it, so the curve is the result and the table one point of it.
Lines: measured rate; bands: 95% Wilson interval.</p>
<figure>{sweep_svg(sweep)}</figure>
<table>{head}{"".join(rows)}</table>"""


def render_html(result: MatrixResult, generated: datetime | None = None, sweep: SweepResult | None = None) -> str:
    """The whole report as one HTML document (no external resources); ReportUnavailable without matplotlib."""
    when = (generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    svg = success_by_delay_svg(result)
    _common, delay_note = recall_delay_note(result.scenarios)
    sections = "\n".join(_scenario_section(result, i) for i in range(len(result.scenarios)))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>recall-lab: likelihood of a successful recall</title>
<style>{_CSS}</style></head>
<body>
<h1>Likelihood of a successful email recall, measured</h1>
<p class="meta">recall-lab matrix: {result.trials_per_cell} trials per condition and mode, seed {_e(result.seed)},
{result.trial_count} trials in {result.elapsed:.1f} s ({'wall-clock' if result.realtime else 'simulated'} time),
generated {when}. Every trial ran over real SMTP and IMAP servers.</p>
<h2>The table (read at the recall delay: {_e(_common or "-")})</h2>
{_table(result)}
<p class="legend">{_e(delay_note)}</p>
<p class="legend">{_e(LEGEND)} A trial succeeds when, at its end, the message is gone from the recipient's
server mailbox and from every client, and was not read before the recall.</p>
<h2>Success against recall delay</h2>
<p class="legend">All trials pooled by where the recipient reads mail; each point is the success rate among
trials whose recall delay falls in one bin (marker size grows with the number of trials).</p>
<figure>{svg}</figure>
{_sweep_section(sweep)}
<h2>Conditions</h2>
{sections}
</body></html>
"""


def write_html(result: MatrixResult, path: str | Path, sweep: SweepResult | None = None) -> Path:
    p = Path(path)
    p.write_text(render_html(result, sweep=sweep), encoding="utf-8")
    return p
