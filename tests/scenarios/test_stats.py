"""Wilson intervals and the article's likelihood words."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recall_lab.harness.scenarios.stats import Rate, likelihood, wilson_interval


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (5, 10, 0.2366, 0.7634),
    (8, 20, 0.2188, 0.6134),
    (1, 1, 0.2065, 1.0),
])
def test_wilson_known_values(k: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(low, abs=1e-4)
    assert got[1] == pytest.approx(high, abs=1e-4)


@given(st.integers(min_value=1, max_value=5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_the_rate_and_stays_in_bounds(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    assert not math.isnan(low) and not math.isnan(high)


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("rate", "word"), [(1.0, "High"), (0.8, "High"), (0.7999, "Moderate"), (0.4, "Moderate"),
                                            (0.3999, "Low"), (0.01, "Low"), (0.0, "None")])
def test_likelihood_thresholds(rate: float, word: str) -> None:
    assert likelihood(rate) == word


def test_rate_text() -> None:
    assert Rate(17, 20).text() == "0.85 [0.64-0.95]"
    # the table's word comes from the interval [0.64-0.95], which straddles 0.80; the bare rate says High
    assert Rate(17, 20).likelihood == "Moderate-High"
    assert Rate(17, 20).rate_likelihood == "High"
    assert Rate(0, 0).text() == "-"
