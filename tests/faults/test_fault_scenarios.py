"""The fault rows of the scenario catalogue: their rules parse as `serve --fault` reads them, the scenario model
keeps them through its TOML form, and a bad rule in a scenario is a one-line error naming the file and the rule.
What they do in a trial is in tests/scenarios/test_fault_rows.py."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from recall_lab.fake_servers.faults import parse_spec
from recall_lab.harness.scenarios import ScenarioError, builtin_scenarios, load_scenario_text
from recall_lab.harness.scenarios.model import load_scenario_data

ROWS = ("relay-outage-recall", "recipient-rejects-recall")


def _file(name: str) -> dict:
    entry = resources.files("recall_lab.harness.scenarios") / f"{name}.toml"
    return tomllib.loads(entry.read_text(encoding="utf-8"))


def test_the_fault_rows_are_matrix_only_rows_of_the_catalogue() -> None:
    with_faults = [s for s in builtin_scenarios() if s.faults]
    assert sorted(s.name for s in with_faults) == sorted(ROWS)
    assert all(not s.demo and s.recipient == "external" for s in with_faults)


@pytest.mark.parametrize("name", ROWS)
def test_their_rules_parse_as_the_command_line_reads_them(name: str) -> None:
    data = _file(name)
    rules = [parse_spec(spec) for spec in data["faults"]]
    assert rules and all(domain == "mail.example" for domain, _ in rules)


@pytest.mark.parametrize("name", ROWS)
def test_the_scenario_model_reads_them(name: str) -> None:
    data = _file(name)
    scenario = load_scenario_data(data, f"{name}.toml")
    assert list(scenario.faults) == data["faults"]
    assert scenario.fault_rules == [parse_spec(spec) for spec in data["faults"]]
    assert load_scenario_data(scenario.to_toml_dict()) == scenario


def test_when_the_rules_are_added() -> None:
    rows = {s.name: s for s in builtin_scenarios()}
    outage, reject = rows["relay-outage-recall"], rows["recipient-rejects-recall"]
    assert outage.faults_at == "send" and [r.kind for _d, r in outage.fault_rules] == ["outage"]
    assert reject.faults_at == "recall" and [r.kind for _d, r in reject.fault_rules] == ["reject"]


BASE = ('name = "x"\ncondition = "c"\nsummary = "s"\n'
        'recall_delay = { dist = "fixed", value = 60, source = "assumption: t" }\n')


@pytest.mark.parametrize(("extra", "message"), [
    ('faults = ["mail.example:rcpt=250"]\n', "faults[0]: 'mail.example:rcpt=250': reply code 250 is not a 4xx"),
    ('faults = ["rcpt=450"]\n', "must be DOMAIN:ACTION=VALUE"),
    ('faults = "mail.example:rcpt=450"\n', 'expected a list of "DOMAIN:SPEC" strings'),
    ('faults = ["mail.example:outage=0-60:mode=silent"]\n', "a scenario's outage answers 421"),
    ('faults = ["mail.example:rcpt=450"]\nfaults_at = "open"\n', "faults_at must be one of send, recall"),
])
def test_bad_faults_are_one_line_errors(extra: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(BASE + extra, "bad.toml")
    assert message in str(info.value)
    assert "\n" not in str(info.value) and str(info.value).startswith("bad.toml")
