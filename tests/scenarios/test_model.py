"""Scenarios as TOML and as Python objects: parsing, validation, the built-in catalogue."""

import tomllib
from importlib import resources

import pytest

from recall_lab.harness.scenarios import (
    Dist,
    Scenario,
    ScenarioError,
    builtin_scenarios,
    find_scenario,
    load_scenario_data,
    load_scenario_file,
    load_scenario_text,
)

ARTICLE_CONDITIONS = {
    "The recipient has not opened the email",
    "The recipient uses the same organisation's server (desktop client)",
    "The recipient uses a web client, static page (the article's)",
    "The recipient uses a different email provider",
}


def test_catalogue_has_one_scenario_per_condition_and_the_extras() -> None:
    names = [s.name for s in builtin_scenarios()]
    assert names == ["unopened", "same-org-desktop", "web-client", "external-provider", "web-client-live",
                     "classic-manual-processing", "read-before-recall", "offline-desktop", "moved-by-rule", "retention-purge", "legal-hold",
                     "delayed-send-gmail", "delayed-send-outlook-web", "delayed-send-outlook-defer",
                     # the conditions the article's table lacks (matrix only: demo = false)
                     "forwarded-before-recall", "auto-forward", "reply-quoting", "lock-screen", "phone-sync",
                     "distribution-list", "shared-mailbox", "recall-too-old", "relay-outage-recall",
                     "recipient-rejects-recall"]
    assert {s.condition for s in builtin_scenarios() if s.article} == ARTICLE_CONDITIONS
    for s in builtin_scenarios():
        assert s.modes == ("cloud", "legacy")


def test_every_shipped_toml_file_is_a_builtin_scenario() -> None:
    files = [e for e in resources.files("recall_lab.harness.scenarios").iterdir() if e.name.endswith(".toml")]
    assert len(files) == len(builtin_scenarios())
    for entry in files:
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
        assert find_scenario(data["name"]) == load_scenario_data(data)


@pytest.mark.parametrize("scenario", builtin_scenarios(), ids=lambda s: s.name)
def test_toml_and_python_forms_round_trip(scenario: Scenario) -> None:
    assert load_scenario_data(scenario.to_toml_dict()) == scenario


def test_a_python_scenario_equals_its_toml_spelling() -> None:
    python = Scenario(name="quick", condition="Quick reader", summary="Reads at once.",
                      open_delay=Dist("exponential", mean=30), recall_delay=Dist("uniform", low=60, high=120))
    toml = load_scenario_text('name = "quick"\ncondition = "Quick reader"\nsummary = "Reads at once."\n'
                              'open_delay = { dist = "exponential", mean = 30, source = "assumption: a" }\n'
                              'recall_delay = { dist = "uniform", low = 60, high = 120, source = "assumption: b" }\n',
                              "quick.toml")
    assert python == toml


def test_user_scenario_file_by_path(tmp_path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\ncondition = "Mine"\nsummary = "s"\nclient = "web"\n'
                    'page_load_interval = { dist = "fixed", value = 300, source = "assumption: mine" }\n',
                    encoding="utf-8")
    s = find_scenario(str(path))
    assert (s.name, s.client, s.page_load_interval) == ("mine", "web", Dist("fixed", value=300.0))
    assert load_scenario_file(path) == s


@pytest.mark.parametrize(("text", "message"), [
    ('name = "x"\ncondition = "c"\n', "missing summary"),
    ('name = "x"\ncondition = "c"\nsummary = "s"\ncolour = 1\n', "unknown key(s): colour"),
    ('name = "x"\ncondition = "c"\nsummary = "s"\nclient = "phone"\n', "client must be one of"),
    ('name = "x"\ncondition = "c"\nsummary = "s"\nclient = "web"\n', "needs page_load_interval"),
    ('name = "x"\ncondition = "c"\nsummary = "s"\nrecall_delay = "never"\n', "recall_delay must always happen"),
    ('name = "x"\ncondition = "c"\nsummary = "s"\nopen_delay = { dist = "gamma" }\n', "dist must be one of"),
    ('name = "x"\ncondition = "c"\nsummary = "s"\nopen_delay = { dist = "uniform", low = 5 }\n', "needs high"),
    ('name = "x"\ncondition = "c"\nsummary = "s"\nopen_delay = -3\n', "cannot be negative"),
    ('name = "x"\ncondition = "c"\nsummary = "s"\nmodes = ["cloud", "hybrid"]\n', "modes must be"),
    ('name = "Bad Name"\ncondition = "c"\nsummary = "s"\n', "name must be"),
    ('name = "x"\ncondition = "c"\nsummary = "s"\nrecipient = "external"\nlegal_hold = true\n',
     "organisation's policies"),
    ('name = "x"\ncondition = = "c"\n', "not valid TOML"),
])
def test_bad_scenarios_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, "bad.toml")
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("bad.toml")


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(ScenarioError, match="unknown scenario 'nope' \\(known: unopened, "):
        find_scenario("nope")


def test_missing_file_is_a_scenario_error(tmp_path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        find_scenario(str(tmp_path / "absent.toml"))


def test_lab_policies_carry_what_the_server_needs() -> None:
    assert find_scenario("retention-purge").lab_policies == {"purge_deleted_after": 30 * 86400.0}
    assert find_scenario("delayed-send-gmail").lab_policies == {"delayed_send": 10.0}
    assert find_scenario("delayed-send-outlook-defer").lab_policies == {"delayed_send": 120.0}
    assert find_scenario("web-client").lab_policies == {}
