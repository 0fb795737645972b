"""Fault rules without sockets: the spec grammar, its one-line errors, the round trip, and determinism."""

from __future__ import annotations

import pytest

from recall_lab.fake_servers.faults import FaultRule, FaultSet, FaultSpecError, parse_rule, parse_spec


@pytest.mark.parametrize(("spec", "rule"), [
    ("rcpt=450:next=3", FaultRule("reject", stage="rcpt", code=450, next=3)),
    ("mail=550:status=5.7.1:on=submission", FaultRule("reject", stage="mail", code=550, status="5.7.1",
                                                      on="submission")),
    ("delay=2.5:at=rcpt:p=0.5", FaultRule("delay", stage="rcpt", seconds=2.5, probability=0.5)),
    ("drop=data", FaultRule("drop", stage="data")),
    ("outage=10-60", FaultRule("outage", stage="connect", code=421, window=(10.0, 60.0), on="mx")),
    ("outage=0-5:mode=silent", FaultRule("outage", stage="connect", silent=True, window=(0.0, 5.0), on="mx")),
    ("imap-drop=3:p=0.25", FaultRule("imap-drop", after=3, probability=0.25)),
])
def test_spec_parses_and_round_trips(spec, rule):
    assert parse_rule(spec) == rule
    assert parse_rule(rule.spec()) == rule


def test_domain_spec():
    assert parse_spec("Mail.Example:rcpt=450") == ("mail.example", FaultRule("reject", stage="rcpt", code=450))


@pytest.mark.parametrize(("spec", "says"), [
    ("rcpt=450", "must be DOMAIN:"),
    ("mail.example:rcpt=250", "not a 4xx or 5xx"),
    ("mail.example:rcpt=abc", "rcpt= must be a whole number"),
    ("mail.example:rcpt=450:p=2", "not a probability"),
    ("mail.example:rcpt=450:drop=mail", "exactly one action"),
    ("mail.example:next=3", "exactly one action"),
    ("mail.example:rcpt=450:color=red", "unknown key 'color'"),
    ("mail.example:rcpt=450:status=5.1.1", "not an enhanced status code of class 4"),
    ("mail.example:outage=60", "must be T0-T1"),
    ("mail.example:outage=60-10", "needs 0 <= T0 < T1"),
    ("mail.example:drop=later", "unknown stage 'later'"),
    ("mail.example:delay=1:at=connect", "delay= needs"),
    ("mail.example:rcpt=450:at=mail", "at= does not apply to rcpt="),
    ("mail.example:rcpt", "is not KEY=VALUE"),
])
def test_bad_specs_are_one_line(spec, says):
    with pytest.raises(FaultSpecError) as err:
        parse_spec(spec)
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def _sequence(seed: int) -> list[str | None]:
    clock = [0.0]
    faults = FaultSet("mail.example", seed=seed, rules=["rcpt=450:p=0.5", "delay=1:at=mail:p=0.3"],
                      clock=lambda: clock[0])
    out = []
    for _ in range(40):
        d = faults.smtp("mx", "mail")
        out.append(f"delay {d.delay:g}")
        out.append(faults.smtp("mx", "rcpt").reply)
    return out


def test_same_seed_same_sequence_other_seed_other_sequence():
    assert _sequence(7) == _sequence(7)
    assert _sequence(7) != _sequence(8)
    assert any(r and r.startswith("450 4.2.1") for r in _sequence(7))
    assert None in _sequence(7)


def test_the_domain_is_part_of_the_seed():
    a = FaultSet("a.example", seed=1, rules=["imap-drop=0:p=0.5"])
    b = FaultSet("b.example", seed=1, rules=["imap-drop=0:p=0.5"])
    assert [a.imap_command(1) for _ in range(30)] != [b.imap_command(1) for _ in range(30)]


def test_next_n_and_clear_and_listener():
    faults = FaultSet("mail.example", rules=["rcpt=450:next=2:on=mx"])
    assert faults.smtp("submission", "rcpt").reply is None
    assert [bool(faults.smtp("mx", "rcpt").reply) for _ in range(4)] == [True, True, False, False]
    faults.add("mail=421", text="closing")
    assert faults.smtp("mx", "mail").reply == "421 4.3.2 closing"
    faults.clear()
    assert faults.rules == [] and not faults.smtp("mx", "mail").acts
    assert [f.action for f in faults.fired] == ["reject 450", "reject 450", "reject 421"]


def test_outage_window_is_on_the_domain_clock_from_when_the_rule_was_added():
    clock = [100.0]
    faults = FaultSet("mail.example", clock=lambda: clock[0])
    faults.add("outage=10-20")
    seen = {}
    for t in (105.0, 110.0, 119.9, 120.0):
        clock[0] = t
        seen[t] = faults.smtp("mx", "connect").reply
    assert seen == {105.0: None, 110.0: "421 4.3.2 Service temporarily unavailable (injected fault)",
                    119.9: "421 4.3.2 Service temporarily unavailable (injected fault)", 120.0: None}
    assert faults.smtp("submission", "connect").reply is None  # an outage is the MX's unless told
