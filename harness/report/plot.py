"""The plot of the HTML report: success rate against recall delay, one line per client type, one panel per mode.

Why this plot: the table says how often a recall works per condition; the plot shows the mechanism behind it.
The later the sender recalls, the likelier the recipient has read the message (or the web page has rendered it),
and how steeply success falls differs by where the recipient reads mail. Trials of every scenario are pooled by
client type and binned by recall delay; each point is the success rate in its bin (marker size ~ trials).

Rendered with matplotlib's Agg backend to SVG text (fonts as paths, no metadata): the HTML page embeds it
inline and needs nothing from the network.

Why matplotlib is imported late, and may be missing: it (with numpy, pillow and fonttools) is most of the weight
of an install, and only this plot needs it, so it is the `report` extra (`pip install 'recall-lab[report]'`),
not a core dependency. Importing this module costs nothing; drawing without matplotlib raises
ReportUnavailable with the one line that says what to install, and the CLI checks `plot_available()` before it
runs any trial for `--html`.
"""

from __future__ import annotations

import io
import re
from types import ModuleType

from recall_lab.harness.scenarios.results import MatrixResult, TrialResult
from recall_lab.harness.scenarios.sweep import SweepResult

#: What to tell a user whose install lacks the plot's dependencies (one line, fit for the CLI).
MISSING_MATPLOTLIB = "--html needs matplotlib for the report's plot: pip install 'recall-lab[report]'"


class ReportUnavailable(RuntimeError):
    """The HTML report cannot be drawn in this install: matplotlib (the `report` extra) is missing or broken."""


def _matplotlib() -> ModuleType:
    """matplotlib, set to the Agg backend; ReportUnavailable (one line) when it cannot be imported."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ReportUnavailable(MISSING_MATPLOTLIB) from exc
    matplotlib.use("Agg", force=False)
    return matplotlib


def plot_available() -> bool:
    """Whether the plot can be drawn here (matplotlib imports); a caller asks before doing work for a report."""
    try:
        _matplotlib()
    except ReportUnavailable:
        return False
    return True

#: x-axis ticks, minutes.
TICKS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30)

#: Bin edges of the recall delay, in seconds of simulated time.
BIN_EDGES = (0, 30, 60, 120, 300, 600, 900, 1800, 3600, float("inf"))


def client_type(trial: TrialResult, delayed_send: bool = False) -> str:
    """How the plot names where the recipient reads mail (delayed send apart: its early "recalls" are cancels)."""
    where = "external provider" if trial.recipient_kind == "external" else f"{trial.client} client"
    return f"{where}, delayed send" if delayed_send else where


def binned_success(trials: list[TrialResult]) -> list[tuple[float, float, int]]:
    """(bin centre in minutes, success rate, trials) for every non-empty bin of recall delay."""
    out = []
    for low, high in zip(BIN_EDGES, BIN_EDGES[1:], strict=False):
        inside = [t for t in trials if low <= t.recall_at < high]
        if not inside:
            continue
        delays = sorted(t.recall_at for t in inside)
        centre = delays[len(delays) // 2] / 60.0  # the median delay of the bin, in minutes
        out.append((centre, sum(t.success for t in inside) / len(inside), len(inside)))
    return out


def success_by_delay_svg(result: MatrixResult) -> str:
    """The plot as an inline `<svg>` element (no XML prolog, no metadata); ReportUnavailable without matplotlib."""
    matplotlib = _matplotlib()
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ReportUnavailable(MISSING_MATPLOTLIB) from exc

    delayed = {s.name for s in result.scenarios if s.delayed_send is not None}
    modes = [m for m in result.modes if any(c.mode == m and c.trials for c in result.cells.values())] or \
        list(result.modes)
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "recall-lab", "font.size": 9}):
        fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 3.9), sharey=True, squeeze=False)
        for ax, mode in zip(axes[0], modes, strict=True):
            by_type: dict[str, list[TrialResult]] = {}
            for t in result.all_trials():
                if t.mode == mode:
                    by_type.setdefault(client_type(t, t.scenario in delayed), []).append(t)
            for name in sorted(by_type):
                points = binned_success(by_type[name])
                if not points:
                    continue
                xs, ys, ns = zip(*points, strict=True)
                (line,) = ax.plot(xs, ys, marker="o", linewidth=1.5, label=name)
                ax.scatter(xs, ys, s=[10 + 2 * n for n in ns], alpha=0.3, color=line.get_color())
            ax.set_title(f"{mode} recall")
            ax.set_xlabel("recall delay after sending (minutes, log scale)")
            ax.set_xscale("log")
            ax.set_xlim(0.1, 30)
            ax.set_xticks(TICKS, [f"{t:g}" for t in TICKS])
            ax.minorticks_off()
            ax.set_ylim(-0.05, 1.05)
            ax.grid(True, alpha=0.3)
        axes[0][0].set_ylabel("success rate (verdict recalled)")
        legend = _legend_entries(axes[0])
        if legend:
            fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(4, len(legend)),
                       fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        return _inline_svg(fig, plt)


def sweep_svg(sweep: SweepResult) -> str:
    """The sweep's plot as inline `<svg>`: success against the (fixed) recall delay, one line with its 95% Wilson
    band per condition, one panel per mode; ReportUnavailable without matplotlib."""
    matplotlib = _matplotlib()
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ReportUnavailable(MISSING_MATPLOTLIB) from exc

    modes = [m for m in sweep.modes if any(k[1] == m for k in sweep.curves)] or list(sweep.modes)
    delays = list(sweep.plan.delays)
    colours = matplotlib.colormaps["tab20"]
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "recall-lab", "font.size": 9}):
        fig, axes = plt.subplots(1, len(modes), figsize=(5.6 * len(modes), 4.4), sharey=True, squeeze=False)
        for ax, mode in zip(axes[0], modes, strict=True):
            for i, s in enumerate(sweep.plan.scenarios):
                points = sweep.curves.get((s.name, mode))
                if not points:
                    continue
                xs = [p.delay for p in points]
                ys = [p.rate.rate for p in points]
                lows = [p.rate.interval[0] for p in points]
                highs = [p.rate.interval[1] for p in points]
                colour = colours(i % 20)
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.4, color=colour, label=s.condition)
                ax.fill_between(xs, lows, highs, color=colour, alpha=0.12, linewidth=0)
            ax.set_title(f"{mode} recall")
            ax.set_xlabel("recall delay after sending (log scale)")
            if min(delays) > 0:
                ax.set_xscale("log")
            ax.set_xticks(delays, [delay_label(d) for d in delays])
            ax.minorticks_off()
            ax.set_ylim(-0.05, 1.05)
            ax.grid(True, alpha=0.3)
        axes[0][0].set_ylabel(f"success rate, 95% band ({sweep.trials_per_point} trials per point)")
        legend = _legend_entries(axes[0])
        rows = (len(legend) + 1) // 2
        if legend:
            fig.legend(list(legend.values()), [_short(label) for label in legend], loc="lower center", ncol=2,
                       fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, min(0.5, 0.045 * rows + 0.03), 1, 1))
        return _inline_svg(fig, plt)


def _legend_entries(axes: object) -> dict[str, object]:
    """One legend entry per label over every panel (the panels share their lines' labels)."""
    legend: dict[str, object] = {}
    for ax in axes:  # type: ignore[attr-defined]
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    return legend


def _inline_svg(fig: object, plt: object) -> str:
    """The figure as an `<svg>` element to inline in a page: no XML prolog, no metadata (so reruns are equal)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[attr-defined]
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)


def delay_label(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _short(label: str, width: int = 70) -> str:
    return label if len(label) <= width else label[:width - 1] + "…"
