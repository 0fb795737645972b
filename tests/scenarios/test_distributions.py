"""Distributions: sources required in scenario files, the mixture kind, and the fitted open delay's quantiles."""

import random
import tomllib
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.harness.scenarios import (
    Dist,
    ScenarioError,
    builtin_scenarios,
    find_scenario,
    load_scenario_text,
)
from recall_lab.harness.scenarios.distributions import exponential, fixed, lognormal, uniform
from recall_lab.harness.scenarios.model import _DIST_FIELDS

HEAD = 'name = "x"\ncondition = "c"\nsummary = "s"\n'
MIX = {"dist": "mixture", "source": "test", "parts": [
    {"weight": 0.3, "dist": "lognormal", "median": 6, "sigma": 0.5},
    {"weight": 0.7, "dist": "lognormal", "median": 9360, "sigma": 2.09}]}


def test_every_distribution_of_every_builtin_file_names_its_source() -> None:
    for entry in resources.files("recall_lab.harness.scenarios").iterdir():
        if not entry.name.endswith(".toml"):
            continue
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
        for key in _DIST_FIELDS:
            if key in data:
                source = data[key]["source"]
                assert source.startswith(("assumption:", "the condition itself", "fit to")) or "et al." in source, \
                    (entry.name, key, source)
        assert find_scenario(data["name"]).recall_delay.source  # recall_delay is required, so always sourced


@pytest.mark.parametrize(("text", "message"), [
    (HEAD + 'recall_delay = { dist = "uniform", low = 60, high = 120 }\n',
     "x.toml.recall_delay: every distribution needs a source"),
    (HEAD + 'open_delay = "never"\n', 'x.toml.open_delay: every distribution needs a source; write it as a table, '
     'e.g. { dist = "never", source = "assumption: why" }'),
    (HEAD + 'client = "web"\npage_load_interval = 300\n', '{ dist = "fixed", value = 300, source'),
    (HEAD + 'open_delay = { dist = "fixed", value = 3, source = "" }\n', "open_delay.source: expected a non-empty"),
])
def test_a_file_without_sources_is_refused_naming_file_and_key(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, "x.toml")
    assert message in str(info.value)


def test_source_is_kept_shown_and_not_part_of_equality() -> None:
    text = HEAD + 'open_delay = { dist = "exponential", mean = 30, source = "assumption: quick" }\n'
    s = load_scenario_text(text, "x.toml")
    assert s.open_delay.source == "assumption: quick"
    assert s.open_delay == exponential(30)  # the numbers decide equality
    assert s.open_delay.to_toml_value() == {"dist": "exponential", "mean": 30.0, "source": "assumption: quick"}
    assert Dist.parse(s.open_delay.to_toml_value(), "w").source == "assumption: quick"
    assert s.open_delay.explain() == "exponential, mean 30 s [assumption: quick]"
    never = Dist.parse({"dist": "never", "source": "the condition itself"}, "w")
    assert never.kind == "never" and never.to_toml_value() == {"dist": "never", "source": "the condition itself"}


def test_mixture_round_trips_and_describes() -> None:
    d = Dist.parse(MIX, "w")
    assert d.kind == "mixture" and [w for w, _ in d.parts] == [0.3, 0.7]
    assert Dist.parse(d.to_toml_value(), "w") == d
    assert d.describe() == "30% lognormal, median 6 s + 70% lognormal, median 156 min"


@pytest.mark.parametrize(("parts", "message"), [
    ([{"weight": 0.5, "dist": "fixed", "value": 1}], "weights must sum to 1"),
    ([{"weight": 0, "dist": "fixed", "value": 1}, {"weight": 1, "dist": "fixed", "value": 2}], "must be positive"),
    ([{"weight": 1, "dist": "never"}], "dist must be one of fixed, uniform, exponential, lognormal"),
    ([{"weight": 1, "dist": "fixed", "value": 1, "probability": 0.5}], "unknown key(s) for dist fixed: probability"),
    ([{"dist": "fixed", "value": 1}], "expected a table with weight and dist"),
    ([], "non-empty list"),
])
def test_bad_mixtures_are_one_line_errors(parts: list, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        Dist.parse({"dist": "mixture", "parts": parts}, "f.toml.open_delay")
    assert message in str(info.value) and str(info.value).startswith("f.toml.open_delay")


MIXTURES = st.lists(
    st.tuples(st.integers(1, 10), st.sampled_from([fixed(3), uniform(1, 9), exponential(5), lognormal(40, 1.0)])),
    min_size=1, max_size=4).map(lambda ps: Dist("mixture", parts=tuple((w / sum(x for x, _ in ps), d)
                                                                        for w, d in ps)))


@settings(max_examples=200)
@given(MIXTURES, st.integers(), st.floats(0.1, 1.0))
def test_mixture_draws_the_same_number_of_values_as_every_other_kind(dist: Dist, seed: int, p: float) -> None:
    """Dist.sample's contract: a fixed number of draws (two), so later samples never shift."""
    mixed = Dist("mixture", parts=dist.parts, probability=p, cap=50)
    a, b = random.Random(seed), random.Random(seed)
    x = mixed.sample(a)
    fixed(1).sample(b)
    assert a.random() == b.random()  # both streams are at the same place
    assert x == mixed.sample(random.Random(seed))
    if x is not None:
        assert 0 <= x <= 50


def test_mixture_parts_keep_their_weights_and_shapes() -> None:
    d = Dist("mixture", parts=((0.25, fixed(1)), (0.75, uniform(100, 200))))
    rng = random.Random(5)
    xs = [d.sample(rng) for _ in range(8000)]
    ones = [x for x in xs if x == 1]
    others = sorted(x for x in xs if x != 1)
    assert 0.23 < len(ones) / len(xs) < 0.27
    assert 100 <= others[0] and others[-1] <= 200 and 145 < others[len(others) // 2] < 155


def _quantiles(dist: Dist, n: int = 40_000) -> tuple[list[float], float]:
    rng = random.Random(11)
    xs = sorted(x for x in (dist.sample(rng) for _ in range(n)) if x is not None)
    return xs, len(xs)


def share(xs: list[float], n: float, upto: float) -> float:
    return sum(x <= upto for x in xs) / n


def test_the_fitted_open_delay_reproduces_the_cited_quantiles() -> None:
    """Kooti et al. 2015: median reply 47 min, ~90% within a day, most common reply 2 min (the slow part's mode);
    Jackson et al. 2003: alerts reacted to within about 6 s (the fast part's median). The old lognormal (median
    45 min, sigma 1.2) had almost nobody open within 2 minutes; the fit has about three in ten."""
    open_delay = find_scenario("same-org-desktop").open_delay
    xs, n = _quantiles(open_delay)
    assert 44 * 60 < xs[len(xs) // 2] < 51 * 60  # median 47 min
    assert 0.87 < share(xs, n, 86_400) < 0.93  # ~90% within a day
    assert 0.28 < share(xs, n, 120) < 0.35  # opened within 2 min: the alert reactors, and a few more
    assert 0.12 < share(xs, n, 6) < 0.18  # half the alert reactors within 6 s
    slow = open_delay.parts[1][1]
    mode = slow.median * 2.718281828459045 ** (-slow.sigma ** 2)
    assert 100 < mode < 140  # the slow part's most common value: 2 min
    old_xs, old_n = _quantiles(lognormal(2700, 1.2))
    assert share(old_xs, old_n, 120) < 0.01  # what the refit corrects


def test_every_reader_who_reads_normally_has_the_fitted_open_delay() -> None:
    fitted = find_scenario("same-org-desktop").open_delay
    for s in builtin_scenarios():
        if s.open_delay.kind == "mixture":
            assert s.open_delay == fitted, s.name


def test_delayed_send_rows_are_named_for_the_products() -> None:
    rows = {s.name: s for s in builtin_scenarios() if s.delayed_send is not None}
    assert {n: s.delayed_send for n, s in rows.items()} == {
        "delayed-send-gmail": 10, "delayed-send-outlook-web": 10, "delayed-send-outlook-defer": 120}
    assert "Gmail" in rows["delayed-send-gmail"].condition
    assert "Outlook on the web" in rows["delayed-send-outlook-web"].condition
    assert "defer-delivery" in rows["delayed-send-outlook-defer"].condition
    notices = {s.recall_delay for s in rows.values()}
    assert len(notices) == 1  # the rows differ only in their window
