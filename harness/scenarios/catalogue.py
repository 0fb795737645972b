"""The built-in scenarios (the TOML files shipped in this package) and how to look one up by name or path.

Why TOML files are the source: they are what a teacher edits; `builtin_scenarios()` parses them into
`Scenario` objects once. A user's own scenario is a TOML file of the same form, passed by path wherever a
name is accepted (`recall-lab matrix --scenario ./my-case.toml`).
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from pathlib import Path

from recall_lab.harness.scenarios.distributions import ScenarioError, require_sources
from recall_lab.harness.scenarios.model import _DIST_FIELDS, Scenario, load_scenario_data


def load_scenario_text(text: str, where: str) -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where}: not valid TOML: {exc}") from None
    scenario = load_scenario_data(data, where)
    require_sources(data, _DIST_FIELDS, where)  # a file is where a modelling choice is made: it names its source
    return scenario


def load_scenario_file(path: str | Path) -> Scenario:
    """A scenario from a TOML file; ScenarioError (one line) when it is missing or malformed."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario file {str(p)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"scenario file {str(p)!r} is not UTF-8") from None
    return load_scenario_text(text, p.name)


@functools.cache
def _builtin() -> tuple[Scenario, ...]:
    found: list[Scenario] = []
    for entry in resources.files("recall_lab.harness.scenarios").iterdir():
        if entry.name.endswith(".toml"):
            found.append(load_scenario_text(entry.read_text(encoding="utf-8"), entry.name))
    names = [s.name for s in found]
    if len(set(names)) != len(names):
        raise ScenarioError(f"duplicate built-in scenario names: {sorted(names)}")
    return tuple(sorted(found, key=lambda s: (s.order, s.name)))


def builtin_scenarios() -> list[Scenario]:
    """Every built-in scenario, in table order (the article's four conditions first)."""
    return list(_builtin())


def scenario_names() -> list[str]:
    return [s.name for s in _builtin()]


def find_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a TOML file by path (anything ending in .toml or containing a slash)."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        return load_scenario_file(name_or_path)
    for s in _builtin():
        if s.name == name_or_path:
            return s
    raise ScenarioError(f"unknown scenario {name_or_path!r} (known: {', '.join(scenario_names())})")
