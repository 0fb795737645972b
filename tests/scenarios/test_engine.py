"""The engine over the real servers: each condition's outcome, and determinism (same seed, same trial).

One matrix with hand-made scenarios whose times are fixed runs once for the module (a couple of seconds); the
tests read its cells. Fixed times make each outcome certain, so every assertion can fail for one reason only.
"""

import asyncio

import pytest

from recall_lab.harness.config import default_config
from recall_lab.harness.matrix import MatrixOptions, run_matrix
from recall_lab.harness.scenarios import Scenario, find_scenario
from recall_lab.harness.scenarios.distributions import fixed


def _s(name: str, **kw) -> Scenario:
    kw.setdefault("recall_delay", fixed(300))
    kw.setdefault("observe_for", 120)
    return Scenario(name=name, condition=name, summary=name, **kw)


SCENARIOS = [
    _s("unread"),
    _s("external", recipient="external", open_delay=fixed(600)),
    _s("read-first", open_delay=fixed(60)),
    _s("read-first-kept", open_delay=fixed(60), policies={"recall_read_messages": False}),
    _s("web-stale", client="web", page_load_interval=fixed(10_000), preview=False),
    _s("web-reloaded", client="web", page_load_interval=fixed(350), preview=False),
    _s("moved", move_to="Projects"),
    _s("held", legal_hold=True),
    _s("purged", delete_delay=fixed(30), purge_deleted_after=60, purge_lag=fixed(0)),
    _s("offline", offline_at=fixed(10), offline_for=fixed(400), observe_for=600),
    _s("delayed-cancel", recipient="external", delayed_send=60, recall_delay=fixed(20)),
    _s("delayed-late", recipient="external", delayed_send=60, recall_delay=fixed(90), open_delay=fixed(5)),
]


@pytest.fixture(scope="module", params=["lab", "dovecot"])
def matrix(request):
    """The module's matrix with the organisation on the lab's own server, then on a real Dovecot (skipped with
    the reason where Dovecot with LMTP is missing): every condition's outcome must be the same on both."""
    config = default_config()
    if request.param == "dovecot":
        from recall_lab.harness.backends import lmtp_available

        if not lmtp_available():
            pytest.skip("Dovecot with LMTP is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
        config.set_backends({"corp.example": "dovecot"})
    return asyncio.run(run_matrix(MatrixOptions(scenarios=SCENARIOS, trials=1, seed=3, concurrency=1,
                                                transcripts=False, base_config=config)))


def _trial(matrix, scenario: str, mode: str):
    cell = matrix.cells[(scenario, mode)]
    assert len(cell.trials) == 1
    trial = cell.trials[0]
    assert trial.error == "", trial.error
    return trial


@pytest.mark.parametrize(("scenario", "mode", "verdict", "status"), [
    ("unread", "cloud", "recalled", "recalled"),
    ("unread", "legacy", "recalled", "recalled"),
    ("external", "cloud", "impossible", "external"),
    ("external", "legacy", "impossible", "external"),
    ("read-first", "cloud", "partial", "recalled-after-read"),
    ("read-first", "legacy", "failed", "failed-read"),
    ("read-first-kept", "cloud", "failed", "failed-read"),  # the scenario's own organisation policy
    ("web-stale", "cloud", "partial", "recalled"),
    ("web-reloaded", "cloud", "recalled", "recalled"),
    ("web-stale", "legacy", "failed", "pending"),
    ("moved", "cloud", "recalled", "recalled"),
    ("moved", "legacy", "failed", "failed-moved"),
    ("held", "cloud", "recalled", "held"),
    ("held", "legacy", "recalled", "recalled"),  # a hold keeps what the client deletes; it does not refuse
    ("purged", "cloud", "recalled", "not-found"),
    ("offline", "cloud", "recalled", "recalled"),
    ("delayed-cancel", "cloud", "recalled", "cancelled"),
    ("delayed-cancel", "legacy", "recalled", "cancelled"),
    ("delayed-late", "cloud", "impossible", "external"),
    ("offline", "legacy", "recalled", "recalled"),  # the notice sent after reconnecting updates the report
])
def test_condition_outcomes(matrix, scenario: str, mode: str, verdict: str, status: str) -> None:
    trial = _trial(matrix, scenario, mode)
    assert (trial.verdict, trial.report_status) == (verdict, status), trial


def test_web_stale_page_still_shows_what_the_server_deleted(matrix) -> None:
    trial = _trial(matrix, "web-stale", "cloud")
    assert not trial.server_copy and trial.client_copy and not trial.read_before_recall


def test_external_copy_stays_on_the_other_server(matrix) -> None:
    trial = _trial(matrix, "external", "cloud")
    assert trial.server_copy and trial.client_copy


def test_offline_client_drops_the_copy_when_back(matrix) -> None:
    trial = _trial(matrix, "offline", "cloud")
    # the report: filed a minute after the recall on the trial's clock (engine.TRIAL_REPORT_DELAY)
    assert [e.split()[1] for e in trial.events] == ["send", "preview", "offline", "recall", "report", "online",
                                                    "observe"]
    assert not trial.client_copy


def test_delayed_send_cancel_leaves_nothing_anywhere(matrix) -> None:
    trial = _trial(matrix, "delayed-cancel", "cloud")
    assert [e.split()[1] for e in trial.events] == ["send", "cancel", "observe"]
    assert not trial.server_copy and not trial.client_copy
    late = _trial(matrix, "delayed-late", "cloud")
    assert [e.split()[1] for e in late.events][:2] == ["send", "release"] and late.read_before_recall


def test_realtime_runs_the_same_plan_on_the_wall_clock() -> None:
    s = _s("quick", recall_delay=fixed(120), observe_for=60)
    result = asyncio.run(run_matrix(MatrixOptions(scenarios=[s], trials=1, seed=3, modes=("cloud",),
                                                  realtime=True, speed=1200, transcripts=False)))
    trial = result.cells[("quick", "cloud")].trials[0]
    assert trial.error == "" and trial.verdict == "recalled"
    assert [e.split()[1] for e in trial.events] == ["send", "preview", "recall", "report", "observe"]
    assert trial.elapsed >= 180 / 1200  # the wall clock ran the 180 simulated seconds


def test_same_seed_same_trials() -> None:
    s = find_scenario("same-org-desktop")

    def run(seed: int):
        result = asyncio.run(run_matrix(MatrixOptions(scenarios=[s], trials=4, seed=seed, concurrency=2,
                                                      transcripts=False, modes=("legacy",))))
        return [(t.index, t.events, t.verdict, t.report_status, round(t.recall_at, 6)) for t in result.all_trials()]

    first = run(11)
    assert first == run(11)
    assert first != run(12)


def test_two_processes_give_the_same_trials_as_one() -> None:
    from recall_lab.harness.matrix import run_matrix_blocking

    scenarios = [find_scenario("web-client"), find_scenario("moved-by-rule")]

    def run(workers: int):
        result = run_matrix_blocking(MatrixOptions(scenarios=scenarios, trials=3, seed=4, workers=workers,
                                                   transcripts=workers == 2))
        return result, [(t.scenario, t.mode, t.index, t.events, t.verdict, t.report_status)
                        for t in result.all_trials()]

    one, one_trials = run(1)
    two, two_trials = run(2)
    assert one_trials == two_trials and len(two_trials) == 12
    assert set(two.transcripts) == {"web-client", "moved-by-rule"}


def test_catalogue_delayed_send_cancel_inside_the_window_always_works() -> None:
    """The delayed-send row's rate is the share of senders who notice in time: every cancel made inside the
    window must work and every later one must fail, so the row never counts a failed in-window cancel."""
    scenario = find_scenario("delayed-send-gmail")
    window = scenario.lab_policies["delayed_send"]
    result = asyncio.run(run_matrix(MatrixOptions(scenarios=[scenario], trials=30, seed=3, transcripts=False)))
    trials = [t for mode in ("cloud", "legacy") for t in result.cells[("delayed-send-gmail", mode)].trials]
    assert all(t.error == "" for t in trials), [t.error for t in trials if t.error]
    inside = [t.verdict for t in trials if t.recall_at <= window]
    late = [t.verdict for t in trials if t.recall_at > window]
    assert inside and late, "the seed should sample both sides of the window"
    assert set(inside) == {"recalled"} and set(late) == {"impossible"}
