"""The cloud recall's Message Recall Report is a delivery of its own, filed after the recall has been processed
(`recall_report_delay` seconds later by the domain's clock), never inside the recall's SMTP transaction.

Time is the domain's clock: the tests drive a fake one and file what is due (`file_due_reports`) instead of
sleeping, or wait for the report itself (the agent IDLEs on the sender's INBOX until it arrives). What happens to
a report still waiting when the domain stops (filed at once) or dies (filed at the next start) is pinned too.
"""

from __future__ import annotations

import pytest

from recall_lab.fake_servers.recall.format import RecallStatus
from recall_lab.fake_servers.recall.policy import RecallPolicy, recall_policy_for
from recall_lab.harness.recall_agent import RecallAgent
from tests.recall.conftest import ALICE, BOB, CORP, TIMEOUT, password, recall_lab, reports_in_inbox, send
from tests.recall.test_policy_unit import delivery, filed, make_services, original, recall, reports

S = RecallStatus


async def test_the_report_is_not_filed_inside_the_recall_but_right_after_it() -> None:
    services, store = make_services()
    store.append(BOB, "INBOX", original())
    policy = RecallPolicy({}, services)
    await policy.on_delivery(delivery(recall()), services)
    # the recall is processed (the copy is gone) and would be answered now: no report yet, its record open
    assert store.find_by_message_id(BOB, "<original-1@corp.example>") == []
    assert reports(store) == [] and len(store.unfinished_operations()) == 1
    [pending] = policy.pending_reports()
    assert pending.sender == ALICE
    await filed(services)
    [report] = reports(store)
    assert report.statuses == {BOB: S.RECALLED}
    assert store.unfinished_operations() == {} and policy.pending_reports() == []


async def test_a_report_delay_is_kept_on_the_domains_clock() -> None:
    now = [1000.0]
    services, store = make_services({"recall_report_delay": 60}, clock=lambda: now[0])
    store.append(BOB, "INBOX", original())
    policy = RecallPolicy(services.config, services)
    try:
        await policy.on_delivery(delivery(recall()), services)
        await filed(services)
        assert reports(store) == [] and [p.due for p in policy.pending_reports()] == [1060.0]
        now[0] += 59
        assert await policy.file_due_reports() == 0 and reports(store) == []
        now[0] += 1
        assert await policy.file_due_reports() == 1
        assert [r.statuses for r in reports(store)] == [{BOB: S.RECALLED}]
        assert store.unfinished_operations() == {}
        assert await policy.file_due_reports() == 0  # filed once
    finally:
        await policy.stop()


async def test_a_report_can_be_filed_at_its_planned_instant_by_its_recalls_message_id() -> None:
    services, store = make_services({"recall_report_delay": 600})
    store.append(BOB, "INBOX", original())
    policy = RecallPolicy(services.config, services)
    d = delivery(recall())
    try:
        await policy.on_delivery(d, services)
        rid = d.message["Message-ID"]
        assert await policy.file_report_now("<nobody@corp.example>") is False
        assert await policy.file_report_now(rid) is True
        assert len(reports(store)) == 1 and await policy.file_report_now(rid) is False
    finally:
        await policy.stop()


async def test_a_domain_stopping_with_a_report_waiting_files_it() -> None:
    services, store = make_services({"recall_report_delay": 3600})
    store.append(BOB, "INBOX", original())
    policy = RecallPolicy(services.config, services)
    await policy.on_delivery(delivery(recall()), services)
    assert reports(store) == []
    await policy.stop()
    assert [r.statuses for r in reports(store)] == [{BOB: S.RECALLED}]
    assert store.unfinished_operations() == {}
    assert services.audit_log[-1]["event"] == "recall-report-filed" and services.audit_log[-1]["how"] == "on-stop"


async def test_a_domain_killed_with_a_report_waiting_files_it_at_the_next_start() -> None:
    services, store = make_services({"recall_report_delay": 3600})
    store.append(BOB, "INBOX", original())
    dead = RecallPolicy(services.config, services)
    await dead.on_delivery(delivery(recall()), services)
    # killed: no stop(); the write-ahead record is all that is left of the waiting report
    assert reports(store) == [] and len(store.unfinished_operations()) == 1
    again = RecallPolicy(services.config, services)  # the restarted server, on the same store
    await again.start(services)
    assert [r.statuses for r in reports(store)] == [{BOB: S.RECALLED}]
    assert store.unfinished_operations() == {}
    await again.start(services)  # nothing left to do
    assert len(reports(store)) == 1
    # (the dead policy's timer ends with the test; what it still holds is filed already: not twice)
    await dead.stop()
    assert len(reports(store)) == 1


@pytest.mark.parametrize("value", [-1, "60", True, 86401])
def test_report_delay_is_checked(value) -> None:
    with pytest.raises(ValueError, match="recall_report_delay"):
        RecallPolicy({"recall_report_delay": value}, make_services()[0])


async def test_over_smtp_the_250_comes_before_the_report_which_the_agent_awaits() -> None:
    now = [0.0]
    async with recall_lab("cloud", clock=lambda: now[0], recall_report_delay=30) as lab:
        mid = await send(lab, ALICE, to=[BOB])
        handle = await RecallAgent(lab, ALICE, password(ALICE)).recall(mid)  # returns on the recall's 250
        await lab.wait_idle()
        assert await reports_in_inbox(lab, ALICE) == []
        policy = recall_policy_for(lab.services(CORP))
        assert policy is not None and len(policy.pending_reports()) == 1
        now[0] += 30
        assert await policy.file_due_reports() == 1
        report = await handle.report(timeout=TIMEOUT)
        assert report.statuses == {BOB: S.RECALLED}


async def test_the_policys_timer_files_a_delayed_report_on_the_wall_clock() -> None:
    async with recall_lab("cloud", recall_report_delay=0.2) as lab:
        mid = await send(lab, ALICE, to=[BOB])
        handle = await RecallAgent(lab, ALICE, password(ALICE)).recall(mid)
        report = await handle.report(timeout=TIMEOUT)  # the agent IDLEs until it arrives
        assert report.statuses == {BOB: S.RECALLED}
        filed_by = [e.get("how") for e in lab.audit_log(CORP) if e["event"] == "recall-report-filed"]
        assert filed_by == ["due"]
