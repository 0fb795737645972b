"""The abuse limits' decisions without any socket: caps, episodes, failure delays, budgets, config parsing.

Why sans-I/O: every rule of recall_lab.fake_servers.guard is a function of counters and a clock, so a fake clock proves the
timing rules (a delay that doubles, a memory that fades, an episode that ends after a quiet spell) exactly and
at once, where a socket test could only sleep and hope.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.guard import (
    ConnectionGuard,
    EpisodeGate,
    GuardLimits,
    address_key,
    default_max_connections,
    peer_host,
)
from recall_lab.harness.config import ConfigError, LabConfig, default_config, limits_from_dict


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(clock: Clock | None = None, **limits: object) -> ConnectionGuard:
    return ConnectionGuard(GuardLimits(**limits), clock=clock or Clock())  # type: ignore[arg-type]


# -- connection caps ---------------------------------------------------------------------------------------
def test_total_cap_refuses_the_extra_connection_and_release_lets_one_in_again():
    g = guard(max_connections=3, max_connections_per_ip=3)
    tickets = [g.admit(f"10.0.0.{i}").ticket for i in range(3)]
    assert all(tickets) and g.connections == 3
    refused = g.admit("10.0.0.9")
    assert refused.ticket is None and "Too many connections" in refused.reason
    g.release(tickets[0])
    g.release(tickets[0])  # idempotent: a double close must not free a second slot
    assert g.connections == 2
    assert g.admit("10.0.0.9").ticket is not None
    assert g.admit("10.0.0.10").ticket is None


def test_per_address_cap_leaves_room_for_other_addresses():
    g = guard(max_connections=10, max_connections_per_ip=2)
    assert g.admit("127.0.0.1").ticket and g.admit("127.0.0.1").ticket
    refused = g.admit("127.0.0.1")
    assert refused.ticket is None and "your address" in refused.reason
    assert g.admit("127.0.0.2").ticket is not None
    assert g.connections_from("127.0.0.1") == 2 and g.connections == 3


def test_one_log_line_when_refusing_starts_and_one_when_accepting_resumes():
    clock = Clock()
    g = guard(clock, max_connections=1, max_connections_per_ip=1, episode_quiet=5.0)
    first = g.admit("10.0.0.1")
    assert first.note is None
    notes = [g.admit("10.0.0.1").note for _ in range(50)] + [g.admit("10.0.0.2").note for _ in range(50)]
    assert notes[0] is not None and "cap of 1 connections" in notes[0]
    assert notes[1:] == [None] * 99
    g.release(first.ticket)
    clock.now += 1.0  # refused only a second ago: still the same episode, no line
    again = g.admit("10.0.0.1")
    assert again.ticket is not None and again.note is None
    assert g.admit("10.0.0.3").note is None  # refused, but the episode never ended: no new line
    g.release(again.ticket)
    clock.now += 5.0
    resumed = g.admit("10.0.0.1")
    assert resumed.ticket is not None and resumed.note is not None
    assert "accepting connections again (101 refused" in resumed.note
    g.release(resumed.ticket)
    clock.now += 100
    assert g.admit("10.0.0.1").note is None  # no episode, no line


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=200),
       st.integers(1, 6), st.integers(1, 6))
def test_counters_stay_consistent_whatever_the_order(ops, total, per_ip):
    g = guard(max_connections=total, max_connections_per_ip=per_ip)
    live: list = []
    for opening, n in ops:
        if opening:
            ticket = g.admit(f"192.0.2.{n}").ticket
            if ticket is not None:
                live.append(ticket)
        elif live:
            g.release(live.pop(n % len(live)))
        assert g.connections == len(live) <= total
        for i in range(6):
            assert g.connections_from(f"192.0.2.{i}") == sum(t.key == f"192.0.2.{i}" for t in live) <= per_ip


# -- failed logins -----------------------------------------------------------------------------------------
def test_each_failure_waits_the_delay_and_the_nth_on_a_connection_disconnects():
    g = guard(auth_failure_delay=2.0, max_auth_failures=3)
    ticket = g.admit("10.0.0.1").ticket
    verdicts = [g.auth_failed(ticket) for _ in range(3)]
    assert [v.delay for v in verdicts] == [2.0, 2.0, 2.0]
    assert [v.disconnect for v in verdicts] == [False, False, True]


def test_an_address_that_keeps_failing_waits_before_each_check_up_to_the_cap_and_is_forgiven_later():
    clock = Clock()
    g = guard(clock, auth_failure_delay=1.0, auth_failure_delay_max=5.0, max_auth_failures=2,
              auth_penalty_after=3, failure_memory=60.0)
    penalties = []
    for _ in range(4):  # four connections, two failures each
        ticket = g.admit("10.0.0.1").ticket
        for _ in range(2):
            penalties.append(g.auth_penalty(ticket))
            assert g.auth_failed(ticket).delay == 1.0  # the answer delay does not grow
        g.release(ticket)
    assert penalties == [0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 5.0, 5.0]
    other = g.admit("10.0.0.2").ticket  # another address is not punished for this one
    assert g.auth_penalty(other) == 0.0
    clock.now += 61
    assert g.recent_failures("10.0.0.1") == 0
    assert g.auth_penalty(g.admit("10.0.0.1").ticket) == 0.0


def test_a_throttle_is_the_guard_bound_to_one_connection():
    g = guard(auth_failure_delay=0.5, max_auth_failures=2, auth_penalty_after=2)
    throttle = g.throttle(g.admit("10.0.0.1").ticket)
    assert throttle.penalty() == 0.0
    first = throttle.failed()
    assert (first.delay, first.disconnect) == (0.5, False)
    assert throttle.penalty() == 0.0  # one failure: under auth_penalty_after
    assert throttle.failed().disconnect
    assert throttle.penalty() == 0.5
    assert guard(auth_penalty_after=0).auth_penalty(g.admit("10.0.0.1").ticket) == 0.0  # 0: never


def test_a_fresh_connection_starts_with_no_failures_of_its_own():
    g = guard(max_auth_failures=2)
    first = g.admit("10.0.0.1").ticket
    assert not g.auth_failed(first).disconnect and g.auth_failed(first).disconnect
    second = g.admit("10.0.0.1").ticket
    assert not g.auth_failed(second).disconnect


def test_failure_memory_is_bounded():
    g = guard(max_tracked_ips=10)
    for i in range(100):
        g.auth_failed(g.admit(f"10.0.{i // 256}.{i % 256}").ticket)
    assert len(g._failures) == 10
    assert g.recent_failures("10.0.0.99") == 1 and g.recent_failures("10.0.0.0") == 0


def test_zero_delay_still_counts_failures():
    g = guard(auth_failure_delay=0.0, max_auth_failures=1)
    verdict = g.auth_failed(g.admit("10.0.0.1").ticket)
    assert verdict.delay == 0.0 and verdict.disconnect


# -- the pre-login budget ----------------------------------------------------------------------------------
def test_login_time_left_counts_from_connect_and_is_not_extended():
    clock = Clock()
    g = guard(clock, login_timeout=60.0)
    ticket = g.admit("10.0.0.1").ticket
    clock.now += 59.5
    assert g.login_time_left(ticket) == pytest.approx(0.5)
    clock.now += 10
    assert g.login_time_left(ticket) == 0.0
    assert guard(login_timeout=0).login_time_left(ticket) is None


# -- addresses ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "key"), [
    ("127.0.0.1", "127.0.0.1"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("", "?"),
    ("/tmp/sock", "/tmp/sock"),
])
def test_address_key(host, key):
    assert address_key(host) == key


def test_peer_host():
    assert peer_host(("127.0.0.1", 4242)) == "127.0.0.1"
    assert peer_host(("::1", 4242, 0, 0)) == "::1"
    assert peer_host(None) == "?"


# -- limits ------------------------------------------------------------------------------------------------
def test_defaults_keep_clear_of_the_open_files_limit():
    assert default_max_connections(1024) == 480
    assert default_max_connections(None) == 1000 == default_max_connections(1_000_000)
    assert default_max_connections(50) == 8
    limits = GuardLimits(nofile=1024)
    assert (limits.max_connections, limits.max_connections_per_ip) == (480, 360)
    assert GuardLimits(max_connections=5, max_connections_per_ip=50).max_connections_per_ip == 5


def test_clone_derives_again_what_was_derived():
    limits = GuardLimits(nofile=1024)
    bigger = limits.clone(max_connections=600)
    assert (bigger.max_connections, bigger.max_connections_per_ip) == (600, 450)
    fixed = GuardLimits(max_connections=100, max_connections_per_ip=7).clone(max_connections=600)
    assert fixed.max_connections_per_ip == 7


@pytest.mark.parametrize("bad", [
    {"max_connections": 0}, {"max_connections_per_ip": 0}, {"login_timeout": -1.0},
    {"auth_failure_delay": float("nan")}, {"auth_failure_delay": float("inf")}, {"max_auth_failures": 0},
    {"smtp_command_timeout": 0.0},
])
def test_bad_limits_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        GuardLimits(**bad)


def test_episode_gate_allows_the_first_of_each_episode():
    clock = Clock()
    gate = EpisodeGate(quiet=10.0, clock=clock)
    assert gate.allow()
    for _ in range(100):
        clock.now += 0.5
        assert not gate.allow()
    assert gate.suppressed == 100
    clock.now += 10
    assert gate.allow() and gate.suppressed == 0


# -- the lab config's [limits] table -----------------------------------------------------------------------
def test_limits_table_in_a_lab_config_round_trips():
    data = default_config().to_dict()
    data["limits"] = {"max_connections": 40, "login_timeout": 5, "auth_failure_delay": 0.25,
                      "max_auth_failures": 5}
    cfg = LabConfig.from_dict(data)
    assert cfg.limits.max_connections == 40 and cfg.limits.max_connections_per_ip == 30
    assert cfg.limits.login_timeout == 5.0 and cfg.limits.auth_failure_delay == 0.25
    assert cfg.limits.max_auth_failures == 5
    assert LabConfig.from_dict(cfg.to_dict()).limits == cfg.limits
    assert default_config().to_dict()["limits"] == {}


@pytest.mark.parametrize(("table", "message"), [
    ({"max_conections": 3}, "limits.max_conections is not a known limit"),
    ({"max_connections": "many"}, "limits.max_connections must be a whole number"),
    ({"max_connections": 2.5}, "limits.max_connections must be a whole number"),
    ({"max_auth_failures": True}, "limits.max_auth_failures must be a whole number"),
    ({"login_timeout": "1m"}, "limits.login_timeout must be a number of seconds"),
    ({"max_connections": 0}, "limits.max_connections must be at least 1"),
    ({"auth_failure_delay": -2}, "limits.auth_failure_delay must be 0 or more seconds"),
])
def test_bad_limits_table_is_one_line_naming_the_key(table, message):
    with pytest.raises(ConfigError, match=message):
        limits_from_dict(table)
    with pytest.raises(ConfigError):
        limits_from_dict(["not", "a", "table"])
