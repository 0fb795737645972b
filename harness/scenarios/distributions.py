"""Seeded distributions of when things happen in a trial (seconds of simulated time).

Why a small closed set instead of arbitrary callables: scenarios are declarative (TOML), so every distribution
must be writable as a table (`{ dist = "lognormal", median = 600, sigma = 1.0 }`) and sampled from a
`random.Random` the trial owns, so that one seed reproduces the whole trial. A distribution may also say
"never" (the user does not open the message at all), which samples to None.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

Kind = Literal["fixed", "uniform", "exponential", "lognormal", "never"]

KINDS: tuple[str, ...] = ("fixed", "uniform", "exponential", "lognormal", "never")


class ScenarioError(ValueError):
    """A scenario (TOML or Python) is malformed; the text says which field and why."""


@dataclass(frozen=True, slots=True)
class Dist:
    """One distribution of a delay in seconds.

    - fixed: always `value`
    - uniform: between `low` and `high`
    - exponential: mean `mean` (memoryless: "notices the mistake at some point")
    - lognormal: median `median`, shape `sigma` (human reaction times are skewed: most quick, a long tail)
    - never: the event does not happen
    `probability` (default 1) is the chance the event happens at all; otherwise the sample is None.
    `cap` bounds a sample from above (long tails would otherwise stretch a trial without changing its story).
    """

    kind: Kind = "fixed"
    value: float = 0.0
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    median: float = 0.0
    sigma: float = 1.0
    probability: float = 1.0
    cap: float | None = None

    def sample(self, rng: random.Random) -> float | None:
        """A delay in seconds, or None when the event does not happen. Always draws the same number of random
        values for a given distribution, so that adding an event later does not shift unrelated samples."""
        happens = rng.random() < self.probability
        u = rng.random()
        if self.kind == "never" or not happens:
            return None
        if self.kind == "fixed":
            x = self.value
        elif self.kind == "uniform":
            x = self.low + (self.high - self.low) * u
        elif self.kind == "exponential":
            x = -self.mean * math.log(1.0 - u)
        else:  # lognormal via the inverse normal CDF of u, so one uniform draw per sample
            x = self.median * math.exp(self.sigma * _norm_ppf(u))
        if self.cap is not None:
            x = min(x, self.cap)
        return max(0.0, x)

    def describe(self) -> str:
        """A short human form, for the demo's narration and the HTML report."""
        if self.kind == "never":
            return "never"
        body = {
            "fixed": f"{_fmt(self.value)}",
            "uniform": f"uniform {_fmt(self.low)}-{_fmt(self.high)}",
            "exponential": f"exponential, mean {_fmt(self.mean)}",
            "lognormal": f"lognormal, median {_fmt(self.median)}",
        }[self.kind]
        if self.probability < 1.0:
            body += f" (p={self.probability:g})"
        return body

    @classmethod
    def parse(cls, data: Any, where: str) -> Dist:
        """From TOML: a number (fixed), the string "never", or a table with `dist` and its parameters."""
        if isinstance(data, bool):
            raise ScenarioError(f"{where}: expected a number, 'never' or a table, got {data!r}")
        if isinstance(data, int | float):
            return cls._checked(cls(kind="fixed", value=float(data)), where)
        if data == "never":
            return cls(kind="never")
        if not isinstance(data, Mapping):
            raise ScenarioError(f"{where}: expected a number, 'never' or a table, got {data!r}")
        kind = data.get("dist")
        if kind not in KINDS:
            raise ScenarioError(f"{where}: dist must be one of {', '.join(KINDS)}, got {kind!r}")
        allowed = {"dist", "probability", "cap", *_PARAMS[kind]}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ScenarioError(f"{where}: unknown key(s) for dist {kind}: {', '.join(unknown)}")
        missing = [p for p in _PARAMS[kind] if p not in data]
        if missing:
            raise ScenarioError(f"{where}: dist {kind} needs {', '.join(missing)}")
        values: dict[str, Any] = {"kind": kind}
        for key in (*_PARAMS[kind], "probability", "cap"):
            if key in data:
                val = data[key]
                if isinstance(val, bool) or not isinstance(val, int | float):
                    raise ScenarioError(f"{where}.{key}: expected a number, got {val!r}")
                values[key] = float(val)
        return cls._checked(cls(**values), where)

    @staticmethod
    def _checked(d: Dist, where: str) -> Dist:
        if not 0.0 <= d.probability <= 1.0:
            raise ScenarioError(f"{where}.probability must be within 0..1, got {d.probability:g}")
        if min(d.value, d.low, d.high, d.mean, d.median) < 0:
            raise ScenarioError(f"{where}: delays cannot be negative")
        if d.kind == "uniform" and d.high < d.low:
            raise ScenarioError(f"{where}: uniform needs low <= high")
        if d.kind in ("lognormal",) and (d.median <= 0 or d.sigma <= 0):
            raise ScenarioError(f"{where}: lognormal needs median > 0 and sigma > 0")
        return d

    def to_toml_value(self) -> dict[str, Any] | float | str:
        """The inverse of `parse` (used by tests to check TOML and Python scenarios agree)."""
        if self.kind == "never":
            return "never"
        if self.kind == "fixed" and self.probability == 1.0 and self.cap is None:
            return self.value
        out: dict[str, Any] = {"dist": self.kind}
        for key in _PARAMS[self.kind]:
            out[key] = getattr(self, key)
        if self.probability != 1.0:
            out["probability"] = self.probability
        if self.cap is not None:
            out["cap"] = self.cap
        return out


_PARAMS: dict[str, tuple[str, ...]] = {
    "fixed": ("value",),
    "uniform": ("low", "high"),
    "exponential": ("mean",),
    "lognormal": ("median", "sigma"),
    "never": (),
}


def fixed(value: float) -> Dist:
    return Dist(kind="fixed", value=value)


def uniform(low: float, high: float) -> Dist:
    return Dist(kind="uniform", low=low, high=high)


def exponential(mean: float, probability: float = 1.0, cap: float | None = None) -> Dist:
    return Dist(kind="exponential", mean=mean, probability=probability, cap=cap)


def lognormal(median: float, sigma: float = 1.0, probability: float = 1.0, cap: float | None = None) -> Dist:
    return Dist(kind="lognormal", median=median, sigma=sigma, probability=probability, cap=cap)


NEVER = Dist(kind="never")


def _fmt(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


_STD_NORMAL = NormalDist()


def _norm_ppf(p: float) -> float:
    """Inverse CDF of the standard normal, clamped away from 0 and 1 (where it is infinite)."""
    return _STD_NORMAL.inv_cdf(min(max(p, 1e-12), 1.0 - 1e-12))
