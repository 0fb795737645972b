"""The fault scenario files: their fault rules parse, and the scenario model reads them once it has a
`faults` key (strict xfail until then: it fails, and says so, the day the model takes them)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from recall_lab.fake_servers.faults import parse_spec
from recall_lab.harness.scenarios.model import ScenarioError, load_scenario_data

FILES = sorted((Path(__file__).parent / "scenarios").glob("*.toml"))


def test_there_are_two_fault_scenarios():
    assert [f.stem for f in FILES] == ["recipient-rejects-recall", "relay-outage-recall"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_their_rules_parse(path):
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    rules = [parse_spec(spec) for spec in data["faults"]]
    assert rules and all(domain == "mail.example" for domain, _ in rules)


@pytest.mark.xfail(strict=True, reason="the scenario model has no `faults` key yet", raises=ScenarioError)
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_the_scenario_model_reads_them(path):
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    scenario = load_scenario_data(data, path.name)
    assert list(scenario.faults) == data["faults"]  # type: ignore[attr-defined]
