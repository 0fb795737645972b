"""The new scenario fields (escapes, members, demo, the live web client) and how a trial's plan carries them."""

import pytest

from recall_lab.harness.clients.outcome import (
    ClientVerdict,
    Escape,
    Residue,
    combine,
    summarise_residues,
)
from recall_lab.harness.scenarios import Scenario, ScenarioError, builtin_scenarios, plan_trial, trial_seed
from recall_lab.harness.scenarios.distributions import fixed
from recall_lab.harness.scenarios.model import load_scenario_data

NEW_ROWS = ("web-client-live", "forwarded-before-recall", "auto-forward", "reply-quoting", "lock-screen",
            "phone-sync", "distribution-list", "shared-mailbox", "recall-too-old")


def _s(**kw) -> Scenario:
    kw.setdefault("recall_delay", fixed(300))
    return Scenario(name="x", condition="x", summary="x", **kw)


@pytest.mark.parametrize(("kw", "message"), [
    ({"escapes": ("teleport",)}, "escapes must be distinct names"),
    ({"escapes": ("reply", "reply"), "escape_delay": fixed(1)}, "escapes must be distinct names"),
    ({"escapes": ("forward",)}, "needs escape_delay"),
    ({"recipient": "list", "members": 0}, "members must be within"),
    ({"recipient": "shared", "client": "web", "page_load_interval": fixed(5)}, "read with desktop clients"),
    ({"recipient": "list", "escapes": ("lock-screen",)}, "without escapes"),
    ({"recipient": "external", "escapes": ("lock-screen",)}, "escapes are modelled"),
    ({"client": "phone"}, "client must be one of"),
])
def test_bad_combinations_are_refused(kw, message) -> None:
    with pytest.raises(ScenarioError, match=message):
        _s(**kw)


def test_new_fields_round_trip_through_toml() -> None:
    s = _s(client="live-web", escapes=("forward", "lock-screen"), escape_delay=fixed(60), demo=False)
    again = load_scenario_data(s.to_toml_dict())
    assert again == s and again.escapes == ("forward", "lock-screen") and again.demo is False
    with pytest.raises(ScenarioError, match="expected bool"):
        load_scenario_data({**s.to_toml_dict(), "demo": "no"})


def test_new_rows_are_matrix_only_and_sourced() -> None:
    rows = {s.name: s for s in builtin_scenarios()}
    assert set(NEW_ROWS) <= set(rows)
    # the demo tells every built-in story but the two fault rows (their trials run one at a time on one clock)
    assert [s.name for s in rows.values() if not s.demo] == [name for name in rows if rows[name].faults]
    article_rows = [s.order for s in rows.values() if s.article]
    assert rows["web-client-live"].order == max(article_rows)  # right after the article's four rows
    assert rows["recall-too-old"].policies == {"recall_max_age_days": 7}
    assert rows["recall-too-old"].recall_delay.low > 7 * 86400  # every recall after the limit


def test_plan_places_the_escapes() -> None:
    s = _s(escapes=("forward", "reply", "lock-screen", "phone-sync"), escape_delay=fixed(60))
    plan = plan_trial(s, trial_seed(1, s.name, 0))
    timed = [(e.at, e.kind.value) for e in plan.events]
    assert (0.0, "phone") in timed and (60.0, "forward") in timed and (60.0, "reply") in timed
    assert timed.index((60.0, "forward")) < timed.index((300.0, "recall"))


def test_members_open_with_the_recipients_own_delay() -> None:
    s = _s(recipient="shared", members=4, open_delay=fixed(30))
    plan = plan_trial(s, trial_seed(1, s.name, 0))
    assert [(e.kind.value, e.note) for e in plan.events if e.kind.value == "member-open"] == [
        ("member-open", "1"), ("member-open", "2"), ("member-open", "3")]


def test_new_samples_leave_older_plans_as_they_were() -> None:
    base = _s(open_delay=fixed(30))
    with_delay = _s(open_delay=fixed(30), escape_delay=fixed(5))
    seed = trial_seed(2, "x", 0)
    assert plan_trial(base, seed).events == plan_trial(with_delay, seed).events


def test_combine_takes_the_worst_member() -> None:
    R, P, F, X = ClientVerdict.RECALLED, ClientVerdict.PARTIAL, ClientVerdict.FAILED, ClientVerdict.IMPOSSIBLE
    assert combine([R, R, R]) is R
    assert combine([R, P, R]) is P
    assert combine([P, F, R]) is F
    assert combine([F, X]) is X
    assert combine([]) is F


def test_residue_words_and_summary() -> None:
    r = Residue(gone_from_every_view=True, recoverable=True, recoverable_until="2026-12-20",
                escapes=(Escape("lock-screen", "bob's phone", "subject and first line"),))
    assert r.words() == ("gone from every view; recoverable by the organisation until 2026-12-20; "
                         "subject and first line shown on a lock screen (bob's phone)")
    held = Residue(gone_from_every_view=False, recoverable=True, held=True, read_before_recall=True)
    assert "while the legal hold lasts" in held.words() and "read before the recall" in held.words()
    counts = summarise_residues([r.to_json(), held.to_json(), {}])
    assert counts["gone_from_every_view"] == 1 and counts["recoverable"] == 2 and counts["held"] == 1
    assert counts["lock-screen"] == 1 and counts["out_of_reach"] == 1 and counts["read_before_recall"] == 1
