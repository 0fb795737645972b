"""The same matrix on two backends, side by side: where a real Dovecot changes the outcome, and why.

Why paired: both runs use the same seed, so trial #i of a condition has the same plan (send, open, recall
times) on both backends; a verdict that differs is the server's doing, not chance. A row is "same" when every
trial ended alike, "differs, within noise" when some trials changed but the 95% intervals overlap, "differs"
when they do not. Each differing row names the trials that changed and what each left behind, and the
differences between the backends that can explain it (BACKEND_DIFFERENCES, docs/dovecot-backend.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from recall_lab.harness.scenarios.results import Cell, MatrixResult, TrialResult
from recall_lab.harness.scenarios.stats import Rate

#: What differs between the lab's own server and Dovecot 2.3 in ways a recall can feel, with why. Keys name
#: the kind of condition each can touch (`_touches`).
BACKEND_DIFFERENCES: dict[str, str] = {
    "push": "Dovecot tells IDLE and NOTIFY clients of a change in batches, about 0.5 s after it (measured: "
            "scripts/bench_imap.py, IDLE push p50 ~510 ms vs under 1 ms on the lab's server); on the simulated "
            "clock of a trial this changes nothing, on the wall clock (--realtime, serve) a client learns late",
    "recoverable": "a message a client expunges over Dovecot's own IMAP reaches the lab's Recoverable Items "
                   "from Dovecot's lazy_expunge copy when the store next looks (a settle point, or within the "
                   "NOTIFY delay in serve), not before the bytes go as on the lab's server",
    "uids": "Dovecot starts a re-created mailbox at UID 1 (new UIDVALIDITY) and gives one MODSEQ to every "
            "message changed by one STORE; \\Recent is given by Dovecot's sessions (RFC 9051 allows all three)",
    "login": "Dovecot counts a loopback client as secure: it takes LOGIN before STARTTLS from 127.0.0.1, where "
             "the lab's server refuses it (LOGINDISABLED)",
    "faults": "IMAP fault rules (disconnects) act on the lab's IMAP server only; a domain on Dovecot has no "
              "IMAPS port (STARTTLS only)",
}


@dataclass
class RowComparison:
    """One condition in one mode on both backends."""

    scenario: str
    condition: str
    mode: str
    first: Rate
    second: Rate
    changed: list[tuple[int, str, str]] = field(default_factory=list)  # (trial, verdict first, verdict second)
    errors: list[str] = field(default_factory=list)  # "backend #i: error"
    residue: list[str] = field(default_factory=list)  # what "recalled" left behind, where it differs

    @property
    def status(self) -> str:
        if not self.changed and not self.errors:
            return "same"
        lo1, hi1 = self.first.interval
        lo2, hi2 = self.second.interval
        return "differs" if hi1 < lo2 or hi2 < lo1 else "differs, within noise"


@dataclass
class BackendComparison:
    first_name: str
    second_name: str
    first: MatrixResult
    second: MatrixResult
    rows: list[RowComparison]

    @property
    def differing(self) -> list[RowComparison]:
        return [r for r in self.rows if r.status != "same"]

    def cost(self) -> tuple[float, float]:
        """Trials per wall second of each run."""
        def rate(result: MatrixResult) -> float:
            return result.trial_count / result.elapsed if result.elapsed else 0.0
        return rate(self.first), rate(self.second)


def _residue_counts(cell: Cell) -> dict[str, int]:
    return {k: v for k, v in cell.residue_counts().items() if v}


def compare_results(first: MatrixResult, second: MatrixResult, first_name: str = "lab",
                    second_name: str = "dovecot") -> BackendComparison:
    """Pair the two runs' trials by (condition, mode, index); they must come from the same seed and counts."""
    rows: list[RowComparison] = []
    conditions = {s.name: s.condition for s in first.scenarios}
    for (scenario, mode), cell in sorted(first.cells.items(), key=lambda kv: (list(conditions).index(kv[0][0])
                                                                             if kv[0][0] in conditions else 0,
                                                                             kv[0][1])):
        other = second.cells.get((scenario, mode))
        if other is None:
            continue
        row = RowComparison(scenario, conditions.get(scenario, scenario), mode, cell.rate, other.rate)
        theirs = {t.index: t for t in other.trials}
        for mine in cell.trials:
            peer: TrialResult | None = theirs.get(mine.index)
            if peer is None:
                continue
            if mine.verdict != peer.verdict:
                row.changed.append((mine.index, mine.verdict, peer.verdict))
            for name, trial in ((first_name, mine), (second_name, peer)):
                if trial.error:
                    row.errors.append(f"{name} #{trial.index}: {trial.error}")
        a, b = _residue_counts(cell), _residue_counts(other)
        for key in sorted(set(a) | set(b)):
            if a.get(key, 0) != b.get(key, 0):
                row.residue.append(f"{key}: {a.get(key, 0)} vs {b.get(key, 0)}")
        rows.append(row)
    return BackendComparison(first_name, second_name, first, second, rows)


def _cell(rate: Rate) -> str:
    lo, hi = rate.interval
    return f"{rate.successes}/{rate.trials} ({lo:.2f}-{hi:.2f})"


def render_comparison(comparison: BackendComparison) -> Table:
    table = Table(title=f"Recall success by backend of the organisation: {comparison.first_name} vs "
                        f"{comparison.second_name} (same seed, trials paired; 95% intervals)")
    for col in ("condition", "mode", comparison.first_name, comparison.second_name, "paired trials"):
        table.add_column(col)
    for row in comparison.rows:
        style = {"same": "green", "differs": "red"}.get(row.status, "yellow")
        table.add_row(row.condition, row.mode, _cell(row.first), _cell(row.second), f"[{style}]{row.status}[/]")
    return table


def _touches(row: RowComparison, result: MatrixResult) -> list[str]:
    """Which BACKEND_DIFFERENCES a differing row can come from, by what its condition exercises."""
    scenario = next((s for s in result.scenarios if s.name == row.scenario), None)
    keys = ["push"]
    if scenario is not None:
        if scenario.legal_hold or scenario.purge_deleted_after is not None or scenario.delete_delay.kind != "never":
            keys.append("recoverable")
        if scenario.faults:
            keys.append("faults")
    if any("recoverable" in r or "held" in r for r in row.residue):
        keys.append("recoverable")
    return list(dict.fromkeys(keys))


def comparison_notes(comparison: BackendComparison) -> list[str]:
    """One paragraph per differing row: the trials that changed, errors, residue, and the candidate causes."""
    lines: list[str] = []
    for row in comparison.differing:
        what = ", ".join(f"#{i} {a} -> {b}" for i, a, b in row.changed[:6])
        more = f" (+{len(row.changed) - 6} more)" if len(row.changed) > 6 else ""
        lines.append(f"{row.condition} [{row.mode}]: {row.status}; trials changed: {what or 'none'}{more}")
        for error in row.errors[:3]:
            lines.append(f"    error: {error}")
        if row.residue:
            lines.append(f"    left behind ({comparison.first_name} vs {comparison.second_name}): "
                         + "; ".join(row.residue))
        for key in _touches(row, comparison.second):
            lines.append(f"    can come from: {BACKEND_DIFFERENCES[key]}")
    same = sum(1 for r in comparison.rows if r.status == "same")
    lines.append(f"{same} of {len(comparison.rows)} rows ended alike in every paired trial.")
    lines.append("What differs between the backends whether or not it changed an outcome here "
                 "(docs/dovecot-backend.md):")
    lines.extend(f"  - {text}" for text in BACKEND_DIFFERENCES.values())
    first, second = comparison.cost()
    lines.append(f"cost: {comparison.first_name} {first:.1f} trials/s, {comparison.second_name} {second:.1f} "
                 f"trials/s ({first / second:.1f}x)" if second else "cost: -")
    return lines


def comparison_json(comparison: BackendComparison) -> dict[str, Any]:
    from recall_lab.harness.report.json_report import result_json

    first, second = comparison.cost()
    return {
        "backends": [comparison.first_name, comparison.second_name],
        "trials_per_second": {comparison.first_name: first, comparison.second_name: second},
        "rows": [{"scenario": r.scenario, "mode": r.mode, "status": r.status,
                  comparison.first_name: [r.first.successes, r.first.trials],
                  comparison.second_name: [r.second.successes, r.second.trials],
                  "changed": [list(c) for c in r.changed], "errors": r.errors, "residue": r.residue}
                 for r in comparison.rows],
        "differences": BACKEND_DIFFERENCES,
        "runs": {comparison.first_name: result_json(comparison.first),
                 comparison.second_name: result_json(comparison.second)},
    }
