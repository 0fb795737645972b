"""Scenarios: one per condition of the recall article's table, as TOML files and `Scenario` objects.

    from recall_lab.harness.scenarios import builtin_scenarios, find_scenario, plan_trial, trial_seed
    s = find_scenario("web-client")
    plan = plan_trial(s, trial_seed(7, s.name, 0))   # the sampled timeline of trial 0, seed 7
"""

from recall_lab.harness.scenarios.catalogue import (
    builtin_scenarios,
    find_scenario,
    load_scenario_file,
    load_scenario_text,
    scenario_names,
)
from recall_lab.harness.scenarios.distributions import (
    NEVER,
    Dist,
    ScenarioError,
    exponential,
    fixed,
    lognormal,
    uniform,
)
from recall_lab.harness.scenarios.model import MODES, Mode, Scenario, load_scenario_data
from recall_lab.harness.scenarios.stats import Rate, likelihood, wilson_interval
from recall_lab.harness.scenarios.timeline import Event, EventKind, Plan, plan_trial, trial_seed

__all__ = [
    "MODES", "NEVER", "Dist", "Event", "EventKind", "Mode", "Plan", "Rate", "Scenario", "ScenarioError",
    "builtin_scenarios", "exponential", "find_scenario", "fixed", "likelihood", "load_scenario_data",
    "load_scenario_file", "load_scenario_text", "lognormal", "plan_trial", "scenario_names", "trial_seed",
    "uniform", "wilson_interval",
]
