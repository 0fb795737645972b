"""Classic recall with automatic processing off (the `classic-manual-processing` row) and the cloud report filed
on the trial's clock: the plan, the validation, and the outcomes over the real servers with fixed times.

Which message the recipient opens first decides the classic recall (docs/recall-sources.md section 2); the cloud
recall does not depend on the client's setting. Fixed times make each outcome certain.
"""

import asyncio
import dataclasses

import pytest

from recall_lab.harness.matrix import MatrixOptions, run_matrix
from recall_lab.harness.scenarios import Scenario, find_scenario
from recall_lab.harness.scenarios.distributions import NEVER, ScenarioError, fixed
from recall_lab.harness.scenarios.engine import TRIAL_REPORT_DELAY
from recall_lab.harness.scenarios.model import load_scenario_data
from recall_lab.harness.scenarios.timeline import EventKind, plan_trial, trial_seed

ROW = find_scenario("classic-manual-processing")


def _manual(name: str, open_at: float | None, open_recall_at: float | None) -> Scenario:
    """The row with fixed times: recall at 300 s; the original opened at `open_at`, the recall message
    `open_recall_at` s after the recall (None: never)."""
    return dataclasses.replace(ROW, name=name, condition=name, recall_delay=fixed(300),
                               open_delay=fixed(open_at) if open_at is not None else NEVER,
                               recall_open_delay=fixed(open_recall_at) if open_recall_at is not None else NEVER,
                               observe_for=1200, demo=False)


SCENARIOS = [
    _manual("recall-message-first", open_at=900, open_recall_at=60),  # recall opened at 360 s, original at 900
    _manual("original-first", open_at=400, open_recall_at=300),  # original at 400 s, recall message at 600
    _manual("read-before", open_at=60, open_recall_at=60),  # read before the recall at all
    _manual("never-opened", open_at=None, open_recall_at=None),
    # observed 30 s after the recall, before the report's minute is up
    dataclasses.replace(_manual("report-not-yet", open_at=None, open_recall_at=None), observe_for=30),
]


@pytest.fixture(scope="module")
def matrix():
    return asyncio.run(run_matrix(MatrixOptions(scenarios=SCENARIOS, trials=1, seed=3, concurrency=1,
                                                transcripts=False)))


def _trial(matrix, scenario: str, mode: str):
    [trial] = matrix.cells[(scenario, mode)].trials
    assert trial.error == "", trial.error
    return trial


@pytest.mark.parametrize(("scenario", "mode", "verdict", "status", "first"), [
    ("recall-message-first", "legacy", "recalled", "recalled", "recall message"),
    ("original-first", "legacy", "failed", "failed-read", "original"),
    ("read-before", "legacy", "failed", "failed-read", "original"),
    ("never-opened", "legacy", "failed", "pending", "neither"),  # the recall waits for a user who never comes
    # the server's recall: the client's setting changes nothing, and no recall message reaches the recipient
    ("recall-message-first", "cloud", "recalled", "recalled", "neither"),
    ("original-first", "cloud", "recalled", "recalled", "neither"),
    ("read-before", "cloud", "partial", "recalled-after-read", "original"),
    ("never-opened", "cloud", "recalled", "recalled", "neither"),
])
def test_which_message_is_opened_first_decides_the_classic_recall(matrix, scenario, mode, verdict, status,
                                                                  first) -> None:
    trial = _trial(matrix, scenario, mode)
    assert (trial.verdict, trial.report_status) == (verdict, status), trial
    assert trial.residue["opened_first"] == first


def test_the_trial_log_has_the_open_of_the_recall_message_and_the_cloud_report(matrix) -> None:
    legacy = _trial(matrix, "recall-message-first", "legacy")
    assert [e.split()[1] for e in legacy.events] == ["send", "preview", "recall", "open-recall", "open",
                                                     "observe"]
    cloud = _trial(matrix, "recall-message-first", "cloud")
    # the report is due at 360 s, the instant of the open: what the server files comes first
    assert [e.split()[1] for e in cloud.events] == ["send", "preview", "recall", "report", "open-recall", "open",
                                                    "observe"]
    assert f"{300 + TRIAL_REPORT_DELAY:.0f} report" in cloud.events


def test_other_rows_keep_their_residue_and_plans() -> None:
    same = find_scenario("same-org-desktop")
    assert same.auto_process_recalls and same.recall_open_delay.kind == "never"
    for i in range(20):
        plan = plan_trial(same, trial_seed(1, same.name, i))
        assert EventKind.OPEN_RECALL not in {e.kind for e in plan.events}


def test_the_rows_plan_opens_the_recall_message_after_it_arrived() -> None:
    kinds = set()
    for i in range(40):
        plan = plan_trial(ROW, trial_seed(1, ROW.name, i))
        for e in plan.events:
            kinds.add(e.kind)
            if e.kind is EventKind.OPEN_RECALL:
                assert e.at > plan.recall_at
    assert EventKind.OPEN_RECALL in kinds


def test_the_row_is_a_desktop_client_in_the_organisation_without_automatic_processing() -> None:
    assert not ROW.auto_process_recalls and ROW.client == "desktop" and ROW.recipient == "organisation"
    assert load_scenario_data(ROW.to_toml_dict()) == ROW
    data = ROW.to_toml_dict()
    with pytest.raises(ScenarioError, match="desktop client in the organisation"):
        load_scenario_data(data | {"client": "web", "page_load_interval": {"dist": "fixed", "value": 60,
                                                                           "source": "test"}})
    with pytest.raises(ScenarioError, match="needs auto_process_recalls = false"):
        load_scenario_data(data | {"auto_process_recalls": True})
    with pytest.raises(ScenarioError, match="expected bool"):
        load_scenario_data(data | {"auto_process_recalls": "no"})


def test_a_report_due_after_the_trial_is_not_read_and_does_not_leak(matrix) -> None:
    trial = _trial(matrix, "report-not-yet", "cloud")
    assert (trial.verdict, trial.report_status) == ("recalled", "")
    assert "report" not in [e.split()[1] for e in trial.events]
