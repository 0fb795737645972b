"""Planning trials: pure functions of (scenario, seed), so determinism is checked without servers."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.harness.scenarios import (
    Dist,
    EventKind,
    Scenario,
    builtin_scenarios,
    find_scenario,
    plan_trial,
    trial_seed,
)
from recall_lab.harness.scenarios.distributions import NEVER, exponential, fixed, lognormal, uniform


def _s(**kw) -> Scenario:
    return Scenario(name="t", condition="t", summary="t", **kw)


def test_same_seed_same_plan_for_every_builtin() -> None:
    for s in builtin_scenarios():
        for i in range(5):
            a = plan_trial(s, trial_seed(42, s.name, i))
            b = plan_trial(s, trial_seed(42, s.name, i))
            assert a == b
            assert list(a.events) == sorted(a.events)


def test_different_trials_differ() -> None:
    s = find_scenario("same-org-desktop")
    recalls = {plan_trial(s, trial_seed(1, s.name, i)).recall_at for i in range(20)}
    assert len(recalls) == 20


def test_seed_is_independent_of_mode_and_stable_text() -> None:
    assert trial_seed(7, "web-client", 3) == "7:web-client:3"


def test_events_run_in_time_order_with_the_recall_and_the_end() -> None:
    plan = plan_trial(_s(recall_delay=fixed(100), open_delay=fixed(50), observe_for=60), "x")
    assert plan.kinds() == ["send", "preview", "open", "recall", "observe"]
    assert [e.at for e in plan.events] == [0, 0, 50, 100, 160]


def test_events_after_the_end_are_dropped() -> None:
    plan = plan_trial(_s(recall_delay=fixed(100), open_delay=fixed(500), observe_for=60), "x")
    assert "open" not in plan.kinds()


def test_ties_follow_the_natural_order() -> None:
    plan = plan_trial(_s(recall_delay=fixed(0), open_delay=fixed(0), move_to="Projects"), "x")
    assert plan.kinds() == ["send", "rule-move", "preview", "open", "recall", "observe"]


def test_delayed_send_cancels_inside_the_window_and_releases_after() -> None:
    inside = plan_trial(_s(delayed_send=60, recall_delay=fixed(20), open_delay=fixed(5)), "x")
    assert inside.cancelled and inside.delivered_at is None
    assert inside.kinds() == ["send", "cancel", "observe"]
    after = plan_trial(_s(delayed_send=60, recall_delay=fixed(90), open_delay=fixed(5)), "x")
    assert not after.cancelled and after.delivered_at == 60
    assert after.kinds() == ["send", "release", "preview", "open", "recall", "observe"]
    assert [e.at for e in after.events][:4] == [0, 60, 60, 65]


def test_offline_client_sees_the_message_only_when_back() -> None:
    plan = plan_trial(_s(offline_at=fixed(0), offline_for=fixed(300), open_delay=fixed(10), recall_delay=fixed(100),
                         observe_for=1000), "x")
    at = {e.kind: e.at for e in plan.events}
    assert at[EventKind.OFFLINE] == 0 and at[EventKind.ONLINE] == 300
    assert at[EventKind.PREVIEW] == 300 and at[EventKind.OPEN] == 300


def test_web_client_loads_pages_from_delivery_on() -> None:
    plan = plan_trial(_s(client="web", page_load_interval=fixed(100), recall_delay=fixed(150), observe_for=100,
                         preview=True), "x")
    loads = [e.at for e in plan.events if e.kind is EventKind.PAGE_LOAD]
    assert loads == [0, 100, 200]
    assert "preview" not in plan.kinds()  # the web page shows no notification


def test_retention_purge_follows_the_delete() -> None:
    plan = plan_trial(_s(delete_delay=fixed(30), purge_deleted_after=60, purge_lag=fixed(5), recall_delay=fixed(200)),
                      "x")
    at = {e.kind: e.at for e in plan.events}
    assert at[EventKind.DELETE] == 30 and at[EventKind.PURGE] == 95


@settings(max_examples=200)
@given(st.sampled_from([fixed(3), uniform(1, 9), exponential(5, cap=20), lognormal(4, 0.5), NEVER,
                        exponential(5, probability=0.5)]), st.integers())
def test_samples_are_reproducible_nonnegative_and_capped(dist: Dist, seed: int) -> None:
    a = dist.sample(random.Random(seed))
    assert a == dist.sample(random.Random(seed))
    if a is not None:
        assert a >= 0
        if dist.cap is not None:
            assert a <= dist.cap
    if dist.kind == "never":
        assert a is None


def test_lognormal_median_is_the_median() -> None:
    rng = random.Random(3)
    xs = sorted(lognormal(600, 1.0).sample(rng) for _ in range(4001))
    assert 540 < xs[2000] < 660
