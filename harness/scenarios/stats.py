"""From trials to the article's words: a success rate, its 95% interval, and High / Moderate / Low / None.

Why the Wilson score interval: with the few dozen trials a demo can afford and rates near 0 or 1 (external
recipients: always 0), the textbook normal interval p +- 1.96 sqrt(p(1-p)/n) collapses to a width of zero or
spills outside [0, 1]. Wilson's interval is the set of true rates p0 for which the observed count would not be
rejected by a two-sided score test at 5%; it stays inside [0, 1] and is honest at the edges:

    centre = (p + z^2 / 2n) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)       with z = 1.96

Likelihood labels (thresholds on the measured rate, not on the interval):
    High      rate >= 0.80
    Moderate  0.40 <= rate < 0.80
    Low       0 < rate < 0.40
    None      rate == 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054

HIGH = 0.8
MODERATE = 0.4

LIKELIHOOD_THRESHOLDS = (("High", HIGH), ("Moderate", MODERATE), ("Low", 0.0))


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for `successes` out of `trials`; (0, 1) when there are no trials."""
    if trials <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= trials:
        raise ValueError(f"successes {successes} outside 0..{trials}")
    n = trials
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    # Exact at the edges (rounding would otherwise leave 1e-17 above 0 for 0 successes).
    if successes == 0:
        low = 0.0
    if successes == n:
        high = 1.0
    return (low, high)


def likelihood(rate: float) -> str:
    """The article's word for a measured success rate (see the module docstring for the thresholds)."""
    if rate >= HIGH:
        return "High"
    if rate >= MODERATE:
        return "Moderate"
    if rate > 0:
        return "Low"
    return "None"


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
        return likelihood(self.rate) if self.trials else "-"

    def text(self) -> str:
        """`0.85 [0.64-0.95]`: the form of the table's rate column."""
        if not self.trials:
            return "-"
        low, high = self.interval
        return f"{self.rate:.2f} [{low:.2f}-{high:.2f}]"
