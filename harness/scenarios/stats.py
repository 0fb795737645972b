"""From trials to the article's words: a success rate, its 95% interval, and High / Moderate / Low / None.

Why the Wilson score interval: with the few dozen trials a demo can afford and rates near 0 or 1 (external
recipients: always 0), the textbook normal interval p +- 1.96 sqrt(p(1-p)/n) collapses to a width of zero or
spills outside [0, 1]. Wilson's interval is the set of true rates p0 for which the observed count would not be
rejected by a two-sided score test at 5%; it stays inside [0, 1] and is honest at the edges:

    centre = (p + z^2 / 2n) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)       with z = 1.96

Why the word comes from the interval, not from the measured rate: a rate of 0.80 at 20 trials is High, 0.75 is
Moderate, and either can come out of the same condition with another seed; a word that flips between runs
teaches nothing. The word names what the interval allows. Bands on the true rate:

    High      >= 0.80
    Moderate  0.40 .. 0.80
    Low       NONE_BELOW .. 0.40
    None      below NONE_BELOW (0.005: a rate shown as 0.00 at two decimals)

The word of `successes` out of `trials` (`likelihood_word`):
    - "None" when every trial failed (the observed rate is 0) or the interval's upper bound is below NONE_BELOW;
    - otherwise the band of the interval's lower bound and the band of its upper bound: one word when they are
      the same band ("High"), both joined when the interval straddles a threshold ("Moderate-High").
A word is never contradicted by its interval: the bands it names are where the interval's ends lie (with the
one stated exception that every-trial-failed says None while the upper bound may reach into Low; the interval
column shows how far). More trials narrow the interval and settle a range into one word; `trials_to_settle`
says how many.

`likelihood(rate)` is the word of a bare rate (High >= 0.80, Moderate >= 0.40, Low > 0, None = 0), kept for
reading a rate without its trial count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054

HIGH = 0.8
MODERATE = 0.4
#: Below this the true rate counts as None: it would be shown as 0.00.
NONE_BELOW = 0.005

LIKELIHOOD_THRESHOLDS = (("High", HIGH), ("Moderate", MODERATE), ("Low", 0.0))
#: The words, lowest first.
WORDS = ("None", "Low", "Moderate", "High")
#: How the table's word is chosen, in one sentence (JSON, legends).
WORD_RULE = ("the word names the bands of the 95% interval's two ends (High >= 0.80, Moderate >= 0.40, "
             f"Low >= {NONE_BELOW}, None below); two words (Moderate-High) when it straddles a threshold; "
             f"None when every trial failed or the upper end is below {NONE_BELOW}")


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n)))
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for `successes` out of `trials`; (0, 1) when there are no trials."""
    if trials <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= trials:
        raise ValueError(f"successes {successes} outside 0..{trials}")
    low, high = _wilson(successes / trials, trials, z)
    # Exact at the edges (rounding would otherwise leave 1e-17 above 0 for 0 successes).
    if successes == 0:
        low = 0.0
    if successes == trials:
        high = 1.0
    return (low, high)


def likelihood(rate: float) -> str:
    """The word of a bare measured rate: High >= 0.80, Moderate >= 0.40, Low > 0, None = 0."""
    if rate >= HIGH:
        return "High"
    if rate >= MODERATE:
        return "Moderate"
    if rate > 0:
        return "Low"
    return "None"


def band(rate: float) -> str:
    """The band a true rate lies in (None below NONE_BELOW; see the module docstring)."""
    if rate >= HIGH:
        return "High"
    if rate >= MODERATE:
        return "Moderate"
    if rate >= NONE_BELOW:
        return "Low"
    return "None"


def word_bands(word: str) -> tuple[str, ...]:
    """The bands a table word names, lowest first: "Moderate-High" -> ("Moderate", "High"); "-" -> ()."""
    if word in WORDS:
        return (word,)
    low, sep, high = word.partition("-")
    if not sep or low not in WORDS or high not in WORDS or WORDS.index(low) >= WORDS.index(high):
        return ()
    return WORDS[WORDS.index(low):WORDS.index(high) + 1]


def likelihood_word(successes: int, trials: int) -> str:
    """The table's word for `successes` out of `trials` (the rule is in the module docstring); "-" for none."""
    if trials <= 0:
        return "-"
    low, high = wilson_interval(successes, trials)
    if successes == 0 or high < NONE_BELOW:
        return "None"
    lower, upper = band(low), band(high)
    return lower if lower == upper else f"{lower}-{upper}"


def trials_to_settle(rate: float, limit: int = 1_000_000) -> int | None:
    """The fewest trials at which a measured `rate` gives a single word (its interval inside one band).

    None when no count up to `limit` does (a rate on a threshold never settles). Every-trial-failed is None at
    any count, so a rate of 0 settles at 1. The interval narrows as trials grow, so a bisection finds it.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate {rate} outside 0..1")
    if rate == 0.0:
        return 1

    def settled(n: int) -> bool:
        low, high = _wilson(rate, n, Z95)
        if rate == 1.0:
            high = 1.0
        return band(low) == band(high)

    if not settled(limit):
        return None
    lo, hi = 1, limit
    while lo < hi:
        mid = (lo + hi) // 2
        if settled(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True, slots=True)
class Rate:
    """Successes out of trials, with what the table shows about them."""

    successes: int
    trials: int

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.trials)

    @property
    def likelihood(self) -> str:
        """The table's word: from the interval (`likelihood_word`), so it does not flip between runs."""
        return likelihood_word(self.successes, self.trials)

    @property
    def rate_likelihood(self) -> str:
        """The word of the bare measured rate (`likelihood`); "-" without trials."""
        return likelihood(self.rate) if self.trials else "-"

    @property
    def straddles(self) -> bool:
        """The interval straddles a threshold: the word is a range."""
        return len(word_bands(self.likelihood)) > 1

    def text(self) -> str:
        """`0.85 [0.64-0.95]`: the form of the table's rate column."""
        if not self.trials:
            return "-"
        low, high = self.interval
        return f"{self.rate:.2f} [{low:.2f}-{high:.2f}]"
