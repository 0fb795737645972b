"""The rows with injected faults, over the real servers: what a relay outage and a refused recall do in a trial.

Each test runs one trial of a built-in fault row (its times fixed, so the order of events is certain) in a lab of
its own built as the matrix builds it (the servers on the trial's simulated clock), and reads the servers'
state from an observer called after every event: the mailboxes through the store API, the relay queue through
the lab's public methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import policy
from email.parser import BytesParser
from typing import Any

import pytest

from recall_lab.harness.config import ConfigError
from recall_lab.harness.lab import Lab
from recall_lab.harness.matrix import MatrixOptions, group_scenarios, lab_config, run_matrix
from recall_lab.harness.scenarios import Scenario, find_scenario, plan_trial, trial_seed
from recall_lab.harness.scenarios.clock import SimClock
from recall_lab.harness.scenarios.distributions import fixed
from recall_lab.harness.scenarios.engine import EXTERNAL, ORG, TrialEngine
from recall_lab.harness.scenarios.results import TrialResult

MODES = ("cloud", "legacy")


def _inbox(lab: Lab, user: str) -> list[tuple[str, frozenset[str], bytes]]:
    """(Subject, flags, raw bytes) of each message in the user's INBOX, in arrival order (store API)."""
    store = lab.store(lab.domain_of(user))
    out = []
    for record in store.messages(user, "INBOX"):
        raw = store.fetch_raw(user, "INBOX", record.uid)
        headers = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        out.append((str(headers["Subject"]), record.flags, raw))
    return out


@dataclasses.dataclass
class Run:
    lab: Lab
    engine: TrialEngine
    slot: Any
    seen: dict[str, Any] = dataclasses.field(default_factory=dict)  # what the observer noted, per event kind
    trials: int = 0

    async def trial(self, scenario: Scenario) -> TrialResult:
        plan = plan_trial(scenario, trial_seed(1, scenario.name, self.trials))
        self.trials += 1
        return await self.engine.run(self.slot, scenario, plan, self.trials - 1)


@asynccontextmanager
async def fault_lab(mode: str, scenario: Scenario, *, trial_clock: bool = True) -> AsyncIterator[Run]:
    """A lab for `scenario` as the matrix builds it: its servers on the shared simulated clock (or, with
    trial_clock=False, on the wall clock, which an outage cannot count on)."""
    clock = SimClock()
    config = lab_config(mode, dict(scenario.lab_policies), 1, faults=scenario.faults)
    server_clock = clock.now if trial_clock else None
    async with Lab(config, store="memory", **({"clock": server_clock} if server_clock else {})) as lab:
        run: Run | None = None

        def observe(ctx: Any, event: Any, notes: list[str]) -> None:
            assert run is not None
            sender, recipient = ctx.slot.sender, ctx.slot.recipient
            run.seen[event.kind.value] = {
                "dave": _inbox(lab, recipient), "alice": _inbox(lab, sender),
                "pending": [(e.dest, e.attempts, e.last_error) for e in lab.relay_pending(ORG)],
                "fired": [f.action for f in lab.faults(EXTERNAL).fired], "notes": notes}

        engine = TrialEngine(lab, mode, shared_clock=clock, observer=observe)
        slot = await engine.open_slot(0, scenario)
        run = Run(lab, engine, slot)
        try:
            yield run
        finally:
            await engine.close_slot(slot)
            engine.close()


def _fixed_outage_row() -> Scenario:
    # Recall at 120 s (inside the outage, 1-901 s), Dave reads at 300 s, the outage ends at 901 s.
    return dataclasses.replace(find_scenario("relay-outage-recall"), recall_delay=fixed(120), open_delay=fixed(300))


@pytest.mark.parametrize("mode", MODES)
async def test_relay_outage_holds_the_recall_until_after_the_read(mode: str) -> None:
    scenario = _fixed_outage_row()
    async with fault_lab(mode, scenario) as run:
        result = await run.trial(scenario)
        assert result.error == "", result.error
        assert (result.verdict, result.report_status) == ("impossible", "external")
        # the cloud recall's report is filed a minute after the recall (the trials' report delay); legacy files
        # its first report with the recall
        report = ("180 report",) if mode == "cloud" else ()
        assert result.events == ("0 send", "0 preview", "120 recall", *report, "300 open", "901 outage-end",
                                 "1320 observe")

        sent = run.seen["send"]
        assert [s for s, _f, _r in sent["dave"]] == ["Quarterly figures (trial 0)"]  # before the outage
        assert sent["fired"] == []
        at_recall = run.seen["recall"]
        [(dest, attempts, error)] = at_recall["pending"]  # the recall met the outage and waits
        assert dest == EXTERNAL and attempts >= 1 and "421 4.3.2" in error
        assert at_recall["fired"] and set(at_recall["fired"]) == {"outage 421"}
        assert any("what corp.example relays there waits in its queue" in n for n in at_recall["notes"])
        at_open = run.seen["open"]
        assert [s for s, _f, _r in at_open["dave"]] == ["Quarterly figures (trial 0)"]  # no recall yet
        assert "\\Seen" in at_open["dave"][0][1]
        at_end = run.seen["observe"]
        assert at_end["pending"] == []
        assert any("outage ends at 901 s" in n for n in at_end["notes"])
        subjects = [s for s, _f, _r in at_end["dave"]]
        assert subjects == ["Quarterly figures (trial 0)", "Recall: Quarterly figures (trial 0)"]  # after the read
        assert not any(b"multipart/report" in raw for _s, _f, raw in at_end["alice"])  # held, not bounced

        # The rules were the trial's: gone afterwards, the relay running again, nothing left in the queue.
        assert run.lab.faults(EXTERNAL).rules == []
        assert run.lab.relay_pending(ORG) == []
        plain = dataclasses.replace(scenario, name="no-fault", faults=())
        again = await run.trial(plain)
        assert again.error == "" and "outage-end" not in " ".join(again.events)
        assert run.seen["recall"]["pending"] == []  # handed over at once: no outage any more
        assert [s for s, _f, _r in run.seen["observe"]["dave"]][-1].startswith("Recall:")


@pytest.mark.parametrize("mode", MODES)
async def test_recipient_server_rejects_the_recall_and_alice_gets_the_bounce(mode: str) -> None:
    scenario = dataclasses.replace(find_scenario("recipient-rejects-recall"), recall_delay=fixed(200))
    async with fault_lab(mode, scenario) as run:
        result = await run.trial(scenario)
        assert result.error == "", result.error
        assert (result.verdict, result.report_status, result.server_copy) == ("impossible", "external", True)
        assert run.seen["send"]["fired"] == []  # the rule is added at the recall: the original got through
        end = run.seen["observe"]
        assert [s for s, _f, _r in end["dave"]] == ["Quarterly figures (trial 0)"]  # the recall never arrived
        assert end["fired"] == ["reject 550"]
        [bounce] = [raw for _s, _f, raw in end["alice"] if b"multipart/report" in raw]
        assert b"550 5.7.1 Message rejected by policy" in bounce
        assert b"Subject: Recall: Quarterly figures (trial 0)" in bounce  # what came back is the recall
        assert run.lab.faults(EXTERNAL).rules == []


async def test_an_outage_needs_the_servers_on_the_trials_clock() -> None:
    scenario = _fixed_outage_row()
    async with fault_lab("cloud", scenario, trial_clock=False) as run:
        result = await run.trial(scenario)
        assert result.verdict == "failed"
        assert "an outage counts on the servers' clock" in result.error
        assert run.lab.faults(EXTERNAL).rules == []


def test_fault_rows_get_labs_of_their_own_run_one_trial_at_a_time() -> None:
    outage, reject, plain = (find_scenario(n) for n in ("relay-outage-recall", "recipient-rejects-recall",
                                                        "external-provider"))
    groups = group_scenarios([outage, reject, plain], ["cloud"])
    by_name = {g.scenarios[0].name: g for g in groups}
    assert [len(g.scenarios) for g in groups] == [1, 1, 1]
    assert by_name["relay-outage-recall"].faults == outage.faults
    assert by_name["relay-outage-recall"].exclusive_clock and by_name["recipient-rejects-recall"].exclusive_clock
    assert not by_name["external-provider"].exclusive_clock


@pytest.mark.parametrize(("faults", "message"), [
    (("elsewhere.example:rcpt=450",), "names elsewhere.example, which is not a domain of the lab"),
    (("mail.example:rcpt=250",), "reply code 250 is not a 4xx or 5xx code"),
])
def test_lab_config_refuses_faults_it_cannot_carry(faults: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        lab_config("cloud", {}, 1, faults=faults)


async def test_matrix_runs_both_rows_in_both_modes_without_errors() -> None:
    rows = [find_scenario("relay-outage-recall"), find_scenario("recipient-rejects-recall")]
    result = await run_matrix(MatrixOptions(scenarios=rows, trials=3, seed=2, transcripts=False))
    trials = list(result.all_trials())
    assert len(trials) == 12
    assert [t.error for t in trials if t.error] == []
    assert {t.verdict for t in trials} == {"impossible"}
    outage = [t for t in trials if t.scenario == "relay-outage-recall"]
    assert all("901 outage-end" in t.events for t in outage)
