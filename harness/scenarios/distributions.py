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
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

Kind = Literal["fixed", "uniform", "exponential", "lognormal", "mixture", "never"]

KINDS: tuple[str, ...] = ("fixed", "uniform", "exponential", "lognormal", "mixture", "never")

#: What a part of a mixture may be: a plain delay (no "never", no nested mixture, no probability or cap of its own).
PART_KINDS: tuple[str, ...] = ("fixed", "uniform", "exponential", "lognormal")


class ScenarioError(ValueError):
    """A scenario (TOML or Python) is malformed; the text says which field and why."""


@dataclass(frozen=True, slots=True)
class Dist:
    """One distribution of a delay in seconds.

    - fixed: always `value`
    - uniform: between `low` and `high`
    - exponential: mean `mean` (memoryless: "notices the mistake at some point")
    - lognormal: median `median`, shape `sigma` (human reaction times are skewed: most quick, a long tail)
    - mixture: `parts`, pairs (weight, Dist) whose weights sum to 1 ("three in ten react to the alert within
      seconds, the others read mail later")
    - never: the event does not happen
    `probability` (default 1) is the chance the event happens at all; otherwise the sample is None.
    `cap` bounds a sample from above (long tails would otherwise stretch a trial without changing its story).
    `source` says where the numbers come from (a citation, or "assumption: why"); it is documentation, so two
    distributions with the same numbers are equal whatever their sources say.
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
    parts: tuple[tuple[float, Dist], ...] = ()
    source: str = field(default="", compare=False)

    def sample(self, rng: random.Random) -> float | None:
        """A delay in seconds, or None when the event does not happen. Always draws the same number of random
        values (two) whatever the distribution, so that adding an event later does not shift unrelated samples.

        A mixture spends no extra draw on choosing its part: the one uniform value `u` picks the part whose
        cumulative-weight slice holds it, and its position inside that slice, stretched back to 0..1, is the
        part's own uniform value (independent of which part was picked, so each part keeps its shape)."""
        happens = rng.random() < self.probability
        u = rng.random()
        if self.kind == "never" or not happens:
            return None
        x = self._at(u)
        if self.cap is not None:
            x = min(x, self.cap)
        return max(0.0, x)

    def _at(self, u: float) -> float:
        """The inverse CDF at u in [0, 1): one uniform value in, one delay out."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "uniform":
            return self.low + (self.high - self.low) * u
        if self.kind == "exponential":
            return -self.mean * math.log(1.0 - u)
        if self.kind == "lognormal":  # via the inverse normal CDF of u, so one uniform draw per sample
            return self.median * math.exp(self.sigma * _norm_ppf(u))
        if self.kind == "mixture":
            start = 0.0
            for i, (weight, part) in enumerate(self.parts):
                if u < start + weight or i == len(self.parts) - 1:
                    inner = (u - start) / weight if weight > 0 else 0.0
                    return part._at(min(max(inner, 0.0), 1.0 - 1e-12))
                start += weight
        return 0.0

    def describe(self) -> str:
        """A short human form, for the demo's narration and the HTML report."""
        if self.kind == "never":
            return "never"
        if self.kind == "mixture":
            body = " + ".join(f"{weight:.0%} {part.describe()}" for weight, part in self.parts)
        else:
            body = {
                "fixed": f"{_fmt(self.value)}",
                "uniform": f"uniform {_fmt(self.low)}-{_fmt(self.high)}",
                "exponential": f"exponential, mean {_fmt(self.mean)}",
                "lognormal": f"lognormal, median {_fmt(self.median)}",
            }[self.kind]
        if self.probability < 1.0:
            body += f" (p={self.probability:g})"
        return body

    def explain(self) -> str:
        """describe() and where the numbers come from (the HTML report's and `matrix --explain`'s form)."""
        return f"{self.describe()} [{self.source or 'no source given'}]"

    @classmethod
    def parse(cls, data: Any, where: str) -> Dist:
        """From TOML: a number (fixed), the string "never", or a table with `dist`, its parameters and an
        optional `source`."""
        return cls._parse(data, where, part=False)

    @classmethod
    def _parse(cls, data: Any, where: str, part: bool) -> Dist:
        if isinstance(data, bool):
            raise ScenarioError(f"{where}: expected a number, 'never' or a table, got {data!r}")
        if isinstance(data, int | float):
            return cls._checked(cls(kind="fixed", value=float(data)), where)
        if data == "never" and not part:
            return cls(kind="never")
        if not isinstance(data, Mapping):
            raise ScenarioError(f"{where}: expected a number, 'never' or a table, got {data!r}")
        kind = data.get("dist")
        kinds = PART_KINDS if part else KINDS
        if kind not in kinds:
            raise ScenarioError(f"{where}: dist must be one of {', '.join(kinds)}, got {kind!r}")
        allowed = {"dist", "source", *_PARAMS[kind]} | (set() if part else {"probability", "cap"})
        if part:
            allowed.add("weight")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ScenarioError(f"{where}: unknown key(s) for dist {kind}: {', '.join(unknown)}")
        missing = [p for p in _PARAMS[kind] if p not in data]
        if missing:
            raise ScenarioError(f"{where}: dist {kind} needs {', '.join(missing)}")
        values: dict[str, Any] = {"kind": kind}
        if "source" in data:
            if not isinstance(data["source"], str) or not data["source"].strip():
                raise ScenarioError(f"{where}.source: expected a non-empty string")
            values["source"] = data["source"].strip()
        if kind == "mixture":
            values["parts"] = cls._parse_parts(data["parts"], f"{where}.parts")
        for key in (*_PARAMS[kind], "probability", "cap"):
            if key in data and key != "parts":
                val = data[key]
                if isinstance(val, bool) or not isinstance(val, int | float):
                    raise ScenarioError(f"{where}.{key}: expected a number, got {val!r}")
                values[key] = float(val)
        return cls._checked(cls(**values), where)

    @classmethod
    def _parse_parts(cls, data: Any, where: str) -> tuple[tuple[float, Dist], ...]:
        if not isinstance(data, list) or not data:
            raise ScenarioError(f"{where}: expected a non-empty list of tables with weight and dist")
        parts = []
        for i, item in enumerate(data):
            at = f"{where}[{i}]"
            if not isinstance(item, Mapping) or "weight" not in item:
                raise ScenarioError(f"{at}: expected a table with weight and dist")
            weight = item["weight"]
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ScenarioError(f"{at}.weight: expected a number, got {weight!r}")
            parts.append((float(weight), cls._parse(item, at, part=True)))
        return tuple(parts)

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
        if d.kind == "mixture":
            if any(w <= 0 for w, _ in d.parts):
                raise ScenarioError(f"{where}: mixture weights must be positive")
            if abs(sum(w for w, _ in d.parts) - 1.0) > 1e-6:
                raise ScenarioError(f"{where}: mixture weights must sum to 1, "
                                    f"got {sum(w for w, _ in d.parts):g}")
        return d

    def to_toml_value(self) -> dict[str, Any] | float | str:
        """The inverse of `parse` (used by tests to check TOML and Python scenarios agree); a distribution with a
        source is always a table, so that the source survives the round trip."""
        if self.kind == "never" and not self.source:
            return "never"
        if self.kind == "fixed" and self.probability == 1.0 and self.cap is None and not self.source:
            return self.value
        out: dict[str, Any] = {"dist": self.kind}
        for key in _PARAMS[self.kind]:
            if key == "parts":
                out[key] = [{"weight": w, **_as_table(p.to_toml_value())} for w, p in self.parts]
            else:
                out[key] = getattr(self, key)
        if self.probability != 1.0:
            out["probability"] = self.probability
        if self.cap is not None:
            out["cap"] = self.cap
        if self.source:
            out["source"] = self.source
        return out


def _as_table(value: dict[str, Any] | float | str) -> dict[str, Any]:
    """A mixture's part always as a table (a bare number cannot carry its weight)."""
    if isinstance(value, dict):
        return value
    return {"dist": "fixed", "value": value}


_PARAMS: dict[str, tuple[str, ...]] = {
    "fixed": ("value",),
    "uniform": ("low", "high"),
    "exponential": ("mean",),
    "lognormal": ("median", "sigma"),
    "mixture": ("parts",),
    "never": (),
}


def require_sources(data: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    """Refuse a scenario table whose distributions do not say where their numbers come from.

    Why at loading: a scenario file is where a modelling choice is made, so it is where the choice must name its
    source (a citation into docs/recall-sources.md, or "assumption: why"); the report shows it next to the
    number. A bare number or "never" cannot carry a source, so a file spells those as tables too."""
    for key in keys:
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, Mapping):
            spelled = '"never"' if value == "never" else f'"fixed", value = {value!r}'
            raise ScenarioError(f"{where}.{key}: every distribution needs a source; write it as a table, e.g. "
                                f'{{ dist = {spelled}, source = "assumption: why" }}')
        source = value.get("source")
        if not isinstance(source, str) or not source.strip():
            raise ScenarioError(f"{where}.{key}: every distribution needs a source (a citation from "
                                f"docs/recall-sources.md or \"assumption: why\"), e.g. source = \"assumption: ...\"")


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
    if seconds >= 3600:
        return f"{seconds / 3600:.2g} h"
    return f"{seconds:g} s"


_STD_NORMAL = NormalDist()


def _norm_ppf(p: float) -> float:
    """Inverse CDF of the standard normal, clamped away from 0 and 1 (where it is infinite)."""
    return _STD_NORMAL.inv_cdf(min(max(p, 1e-12), 1.0 - 1e-12))
