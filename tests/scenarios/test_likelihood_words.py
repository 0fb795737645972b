"""The table's likelihood words come from the Wilson interval: they do not flip with the rate, and never
contradict the interval they summarise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recall_lab.harness.scenarios.stats import (
    HIGH,
    MODERATE,
    NONE_BELOW,
    WORDS,
    Rate,
    band,
    likelihood_word,
    trials_to_settle,
    wilson_interval,
    word_bands,
)

counts = st.integers(min_value=1, max_value=3000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


def _rank(word: str) -> tuple[int, int]:
    bands = word_bands(word)
    assert bands, f"not a table word: {word!r}"
    return WORDS.index(bands[0]), WORDS.index(bands[-1])


@pytest.mark.parametrize(("k", "n", "word"), [
    (20, 20, "High"),            # [0.84-1.00]
    (19, 20, "Moderate-High"),   # [0.76-0.99] straddles 0.80
    (16, 20, "Moderate-High"),   # [0.58-0.92]
    (6, 20, "Low-Moderate"),     # [0.15-0.52] straddles 0.40
    (1, 20, "Low"),              # [0.009-0.24]
    (1, 40, "None-Low"),         # [0.004-0.13]: the low end shows as 0.00
    (3, 5, "Low-High"),          # [0.23-0.88]: wider than the Moderate band
    (0, 20, "None"),             # every trial failed
    (1, 2000, "None"),           # upper end below NONE_BELOW
    (0, 0, "-"),
])
def test_known_words(k: int, n: int, word: str) -> None:
    assert likelihood_word(k, n) == word


@given(counts)
def test_the_word_never_contradicts_its_interval(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = wilson_interval(k, n)
    word = likelihood_word(k, n)
    bands = word_bands(word)
    if k == 0 or high < NONE_BELOW:
        # the stated exception: every trial failed (or the upper end shows as 0.00) says None
        assert word == "None" and band(low) == "None"
        return
    assert bands[0] == band(low) and bands[-1] == band(high), (k, n, low, high, word)
    # a single word: the whole interval lies inside its band
    if len(bands) == 1:
        assert band(low) == band(high) == word


@given(counts)
def test_the_word_is_monotone_in_successes(kn: tuple[int, int]) -> None:
    k, n = kn
    if k < n:
        low_word, high_word = _rank(likelihood_word(k, n)), _rank(likelihood_word(k + 1, n))
        assert low_word[0] <= high_word[0] and low_word[1] <= high_word[1], (k, n)


@given(counts)
def test_none_only_when_every_trial_failed_or_the_upper_end_is_below_epsilon(kn: tuple[int, int]) -> None:
    k, n = kn
    _, high = wilson_interval(k, n)
    assert (likelihood_word(k, n) == "None") == (k == 0 or high < NONE_BELOW)


@given(counts)
def test_a_single_word_agrees_with_the_bare_rate(kn: tuple[int, int]) -> None:
    """When the interval settles on one band, the measured rate is in it too (words from both cannot clash)."""
    k, n = kn
    word = likelihood_word(k, n)
    if k and word in WORDS:
        assert band(k / n) == word


@pytest.mark.parametrize(("word", "bands"), [
    ("High", ("High",)), ("Moderate-High", ("Moderate", "High")),
    ("Low-High", ("Low", "Moderate", "High")), ("High-Low", ()), ("-", ()), ("Sometimes", ()),
])
def test_word_bands(word: str, bands: tuple[str, ...]) -> None:
    assert word_bands(word) == bands


def test_trials_to_settle_known_values() -> None:
    # 1.00 settles at 16 trials: 16/16 is High, 15/15 still reaches below 0.80
    assert trials_to_settle(1.0) == 16
    assert likelihood_word(16, 16) == "High" and likelihood_word(15, 15) == "Moderate-High"
    assert trials_to_settle(0.0) == 1
    assert trials_to_settle(HIGH) is None and trials_to_settle(MODERATE) is None  # on a threshold: never
    with pytest.raises(ValueError):
        trials_to_settle(1.5)


@given(st.floats(min_value=0.01, max_value=0.99).filter(
    lambda p: min(abs(p - HIGH), abs(p - MODERATE)) > 0.03))
def test_trials_to_settle_is_the_first_count_that_settles(p: float) -> None:
    n = trials_to_settle(p)
    assert n is not None
    k = round(p * n)
    # at n trials, a count at (or within rounding of) the rate gives at most a range one band wide;
    # with ten times as many trials, the word is a single one
    assert len(word_bands(likelihood_word(k, n))) <= 2
    assert likelihood_word(round(p * 10 * n), 10 * n) in WORDS


def test_rate_exposes_both_words() -> None:
    r = Rate(19, 20)
    assert (r.likelihood, r.rate_likelihood, r.straddles) == ("Moderate-High", "High", True)
    assert not Rate(20, 20).straddles and Rate(0, 0).likelihood == "-"
