"""The conditions beyond the article's table, through the engine over the real servers, in both modes.

One matrix of hand-made scenarios with fixed times runs once for the module; fixed times make each outcome
certain (recall at 300 s; a forward, reply or open at 60 s), so each assertion can fail for one reason.
"""

import asyncio

import pytest

from recall_lab.harness.matrix import MatrixOptions, run_matrix
from recall_lab.harness.scenarios import Scenario, plan_trial, trial_seed
from recall_lab.harness.scenarios.distributions import Dist, fixed

DAY = 86400.0


def _s(name: str, **kw) -> Scenario:
    kw.setdefault("recall_delay", fixed(300))
    kw.setdefault("observe_for", 120)
    return Scenario(name=name, condition=name, summary=name, **kw)


SCENARIOS = [
    _s("live-unread", client="live-web", preview=False),
    _s("live-read", client="live-web", preview=False, open_delay=fixed(60)),
    _s("static-unread", client="web", preview=False, page_load_interval=fixed(10_000)),
    _s("forward", escapes=("forward",), escape_delay=fixed(60)),
    _s("auto-forward", escapes=("auto-forward",)),
    _s("reply", escapes=("reply",), escape_delay=fixed(60)),
    _s("lock-screen", escapes=("lock-screen",)),
    _s("phone-sync", escapes=("phone-sync",)),
    _s("list-unread", recipient="list", members=3),
    _s("list-read", recipient="list", members=3, open_delay=fixed(60)),
    _s("shared-read", recipient="shared", members=3, open_delay=fixed(60)),
    # half the people open at 60 s: the seed makes only the second member / reader open (checked below)
    _s("list-some-read", recipient="list", members=3, open_delay=Dist(kind="fixed", value=60, probability=0.5)),
    _s("shared-other-reader", recipient="shared", members=3,
       open_delay=Dist(kind="fixed", value=60, probability=0.5)),
    _s("too-old", recall_delay=fixed(2 * DAY), policies={"recall_max_age_days": 1}),
    _s("young-enough", recall_delay=fixed(0.5 * DAY), policies={"recall_max_age_days": 1}),
    _s("held", legal_hold=True),
]


@pytest.fixture(scope="module")
def matrix():
    return asyncio.run(run_matrix(MatrixOptions(scenarios=SCENARIOS, trials=1, seed=3, concurrency=1,
                                                transcripts=False)))


def _trial(matrix, scenario: str, mode: str):
    trial = matrix.cells[(scenario, mode)].trials[0]
    assert trial.error == "", trial.error
    return trial


def _escapes(trial) -> set[str]:
    return {e["kind"] for e in trial.residue["escapes"]}


@pytest.mark.parametrize(("scenario", "mode", "verdict", "status"), [
    ("live-unread", "cloud", "recalled", "recalled"),  # the live page drops what the server removed
    ("live-unread", "legacy", "failed", "pending"),  # no web client processes a classic recall
    ("static-unread", "cloud", "partial", "recalled"),  # the article's page keeps showing it
    ("live-read", "cloud", "partial", "recalled-after-read"),
    ("live-read", "legacy", "failed", "pending"),
    ("forward", "cloud", "partial", "recalled-after-read"),
    ("forward", "legacy", "failed", "failed-read"),
    ("auto-forward", "cloud", "recalled", "recalled"),
    ("auto-forward", "legacy", "recalled", "recalled"),
    ("reply", "cloud", "partial", "recalled-after-read"),
    ("reply", "legacy", "failed", "failed-read"),
    ("lock-screen", "cloud", "recalled", "recalled"),
    ("lock-screen", "legacy", "recalled", "recalled"),
    ("phone-sync", "cloud", "partial", "recalled"),  # the offline phone still shows its synced copy
    ("phone-sync", "legacy", "partial", "recalled"),
    ("list-unread", "cloud", "recalled", "recalled"),
    ("list-unread", "legacy", "recalled", "recalled"),
    ("list-read", "cloud", "partial", "recalled-after-read"),
    ("list-read", "legacy", "failed", "failed-read"),
    ("shared-read", "cloud", "partial", "recalled-after-read"),
    ("shared-read", "legacy", "failed", "failed-read"),
    ("list-some-read", "cloud", "partial", "recalled"),  # the slot's own member did not read it; member 1 did
    ("list-some-read", "legacy", "failed", "recalled"),  # member 1's client refuses: the list's worst verdict
    ("shared-other-reader", "cloud", "partial", "recalled-after-read"),
    ("shared-other-reader", "legacy", "failed", "failed-read"),  # another reader's open set \Seen for all
    ("too-old", "cloud", "failed", "failed-too-old"),
    ("too-old", "legacy", "recalled", "recalled"),  # the classic recall knows no age limit
    ("young-enough", "cloud", "recalled", "recalled"),
])
def test_condition_outcomes(matrix, scenario: str, mode: str, verdict: str, status: str) -> None:
    trial = _trial(matrix, scenario, mode)
    assert (trial.verdict, trial.report_status) == (verdict, status), trial


def test_live_page_was_shown_the_message_then_dropped_it(matrix) -> None:
    trial = _trial(matrix, "live-unread", "cloud")
    assert not trial.client_copy and trial.residue["gone_from_every_view"]
    assert not _trial(matrix, "static-unread", "cloud").residue["gone_from_every_view"]


@pytest.mark.parametrize("mode", ["cloud", "legacy"])
def test_forwarded_copy_escapes_to_the_other_provider(matrix, mode: str) -> None:
    assert _escapes(_trial(matrix, "forward", mode)) == {"forwarded"}
    assert _escapes(_trial(matrix, "auto-forward", mode)) == {"auto-forwarded"}
    assert _escapes(_trial(matrix, "reply", mode)) == {"quoted-in-reply"}


@pytest.mark.parametrize("mode", ["cloud", "legacy"])
def test_phone_copies(matrix, mode: str) -> None:
    lock = _trial(matrix, "lock-screen", mode)
    [escape] = lock.residue["escapes"]
    assert escape["kind"] == "lock-screen" and escape["holds"] == "subject and first line"
    assert escape["where"].endswith("'s phone lock screen")
    assert lock.residue["gone_from_every_view"]  # the phone was online: it dropped the message with the rest
    synced = _trial(matrix, "phone-sync", mode)
    assert _escapes(synced) == {"phone-sync"} and synced.client_copy and not synced.server_copy


def test_recalled_message_is_still_recoverable_by_the_organisation(matrix) -> None:
    residue = _trial(matrix, "lock-screen", "cloud").residue
    assert residue["recoverable"] and residue["recoverable_until"] and not residue["held"]
    held = _trial(matrix, "held", "cloud").residue
    assert held["recoverable"] and held["held"] and held["recoverable_until"] is None


def test_nothing_escapes_an_ordinary_unread_recall(matrix) -> None:
    residue = _trial(matrix, "list-unread", "cloud").residue
    assert residue["escapes"] == [] and residue["gone_from_every_view"] and not residue["read_before_recall"]


def test_row_summary_counts_residue(matrix) -> None:
    [row] = [r for r in matrix.rows() if r["scenario"] == "forward"]
    assert row["cloud"]["residue"]["forwarded"] == 1 and row["cloud"]["residue"]["read_before_recall"] == 1


def test_age_limit_names_why(matrix) -> None:
    trial = _trial(matrix, "too-old", "cloud")
    assert trial.server_copy and trial.residue["escapes"] == []


def _opens(name: str) -> list[tuple[str, str]]:
    scenario = next(s for s in SCENARIOS if s.name == name)
    plan = plan_trial(scenario, trial_seed(3, name, 0))
    return [(e.kind.value, e.note) for e in plan.events if "open" in e.kind.value]


@pytest.mark.parametrize("mode", ["cloud", "legacy"])
def test_one_member_of_a_list_reading_it_decides_the_list(matrix, mode: str) -> None:
    assert _opens("list-some-read") == [("member-open", "1")]
    trial = _trial(matrix, "list-some-read", mode)
    assert trial.residue["read_before_recall"]
    members = trial.residue["members"]
    assert len(members) == 3 and sorted(members.values()).count("recalled") == 2


def test_one_reader_of_a_shared_mailbox_exposes_everyone(matrix) -> None:
    assert _opens("shared-other-reader") == [("member-open", "1")]
    trial = _trial(matrix, "shared-other-reader", "cloud")
    assert trial.read_before_recall and trial.residue["read_before_recall"]
    assert trial.events[-1].endswith("observe") and not any(e.endswith(" open") for e in trial.events)
