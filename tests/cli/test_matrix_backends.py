"""`--backend DOMAIN=KIND` on serve and matrix, and `matrix --compare-backends`: the two runs side by side.

The comparison logic is checked on hand-made results (each status, the paired trials, the cost line), the
command itself once end to end on two short rows with the organisation on a real Dovecot.
"""

import json

import pytest

from recall_lab.harness.backends import lmtp_available
from recall_lab.harness.cli import main
from recall_lab.harness.report.backend_compare import compare_results, comparison_notes
from recall_lab.harness.scenarios import find_scenario
from recall_lab.harness.scenarios.results import MatrixResult, TrialResult


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize(("args", "message"), [
    (["matrix", "--backend", "corp.example"], "use DOMAIN=KIND"),
    (["matrix", "--backend", "nope.example=dovecot"], "no domain nope.example"),
    (["matrix", "--backend", "corp.example=exchange"], "the kind must be one of lab, dovecot"),
    (["matrix", "--compare-backends"], "--compare-backends needs --backend"),
    (["matrix", "--compare-backends", "--backend", "corp.example=dovecot", "--sweep", "recall-delay=30"],
     "--compare-backends takes --json only"),
    (["serve", "--backend", "corp.example=exchange"], "the kind must be one of lab, dovecot"),
])
def test_backend_usage_errors_are_one_line_exit_2(args: list[str], message: str, capsys) -> None:
    code, out, err = run_cli(args, capsys)
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("recall-lab: ") and message in err, err
    assert "Traceback" not in out + err


def _result(verdicts: dict[tuple[str, str], list[str]], elapsed: float, errors: dict | None = None) -> MatrixResult:
    scenario = find_scenario("unopened")
    result = MatrixResult(seed=1, trials_per_cell=4, scenarios=[scenario], elapsed=elapsed)
    for (name, mode), row in verdicts.items():
        for i, verdict in enumerate(row):
            result.add(TrialResult(scenario=name, mode=mode, index=i, seed="s", client="desktop",
                                   recipient_kind="organisation", recall_at=60.0, verdict=verdict,
                                   report_status="recalled", read_before_recall=False, preview_seen=False,
                                   server_copy=False, client_copy=False, events=(),
                                   error=(errors or {}).get((mode, i), "")))
    return result


def test_paired_trials_give_same_within_noise_and_differs() -> None:
    ok, fail = "recalled", "failed"
    first = _result({("unopened", "cloud"): [ok] * 4, ("unopened", "legacy"): [ok] * 4}, elapsed=2.0)
    second = _result({("unopened", "cloud"): [ok, ok, ok, fail], ("unopened", "legacy"): [fail] * 4},
                     elapsed=8.0, errors={("legacy", 0): "TimeoutError"})
    comparison = compare_results(first, second, "lab", "dovecot")
    status = {r.mode: r.status for r in comparison.rows}
    assert status == {"cloud": "differs, within noise", "legacy": "differs"}
    legacy = next(r for r in comparison.rows if r.mode == "legacy")
    assert legacy.changed == [(i, ok, fail) for i in range(4)] and legacy.errors == ["dovecot #0: TimeoutError"]
    notes = "\n".join(comparison_notes(comparison))
    assert "#3 recalled -> failed" in notes and "0 of 2 rows ended alike" in notes
    assert "cost: lab 4.0 trials/s, dovecot 1.0 trials/s (4.0x)" in notes
    assert "What differs between the backends" in notes and "about 0.5 s" in notes  # said even when all agree
    same = compare_results(first, first)
    assert [r.status for r in same.rows] == ["same", "same"] and same.differing == []


@pytest.mark.skipif(not lmtp_available(), reason="Dovecot with LMTP is not installed "
                                                 "(apt-get install dovecot-imapd dovecot-lmtpd)")
def test_compare_backends_end_to_end(tmp_path, capsys) -> None:
    out_json = tmp_path / "cmp.json"
    code, out, err = run_cli(["matrix", "--backend", "corp.example=dovecot", "--compare-backends", "-n", "2",
                              "--scenario", "unopened", "--scenario", "read-before-recall", "--workers", "1",
                              "--json", str(out_json)], capsys)
    assert code in (0, None), err
    assert "lab vs dovecot" in out and "backends: corp.example=dovecot; seed 1, 2 trials" in out
    assert "4 of 4 rows ended alike in every paired trial." in out
    data = json.loads(out_json.read_text())
    assert data["backends"] == ["lab", "dovecot"]
    assert {(r["scenario"], r["mode"], r["status"]) for r in data["rows"]} == {
        ("unopened", "cloud", "same"), ("unopened", "legacy", "same"),
        ("read-before-recall", "cloud", "same"), ("read-before-recall", "legacy", "same")}
    assert data["trials_per_second"]["dovecot"] > 0
    assert set(data["runs"]) == {"lab", "dovecot"}
