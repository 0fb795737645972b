"""A cloud recall cut short (the process killed half-way) is finished when the server starts again, and the
sender gets exactly one report, the one decided before the first copy went.

The kill is reproduced in-process: the store (or a delivery) raises a BaseException at a chosen step, which
nothing in the lab catches, as nothing runs after a SIGKILL; then a new policy starts on the same store (the
Maildir store reopened on the same directory: what a restarted `serve` sees). The end-to-end version with a
real `recall-lab serve` killed with SIGKILL is tests/e2e/test_recall_crash.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.pipeline import DomainServices
from recall_lab.fake_servers.recall.format import RecallAction, RecallStatus
from recall_lab.fake_servers.recall.policy import OPERATION_KIND, RecallPolicy
from recall_lab.fake_servers.store import MaildirStore, MemoryStore
from recall_lab.fake_servers.store.base import MessagesExpunged
from tests.recall.test_policy_unit import (
    CORP,
    ORIGINAL,
    USERS,
    Spawned,
    delivery,
    filed,
    original,
    recall,
    reports,
    sent,
)

ALICE, BOB, CAROL, DAVE = USERS[0], USERS[1], USERS[2], "dave@mail.example"
EVERYONE = (BOB, CAROL, DAVE)


class Killed(BaseException):
    """The process dies here: nothing after this point runs, and nothing catches it."""


@dataclass
class Kill:
    """Where to die: ("expunge", user) in the store, or ("deliver", user) in local delivery; once."""

    at: tuple[str, str] | None = None

    def check(self, step: str, user: str) -> None:
        if self.at == (step, user):
            self.at = None
            raise Killed(f"{step} {user}")


def killable(base: type) -> type:
    class KillableStore(base):  # type: ignore[misc, valid-type]
        kill = Kill()

        def expunge(self, user, mailbox, uids=None, origin=None):
            self.kill.check("expunge", user)
            return super().expunge(user, mailbox, uids, origin)

    return KillableStore


#: What the policy handed to the intake for other providers (the replacement to dave), across restarts.
RELAYED: list[tuple[str, tuple[str, ...]]] = []


def services_for(store, settings=None, kill: Kill | None = None) -> DomainServices:
    async def submit(mail_from, recipients, raw, **_kw):
        RELAYED.append((mail_from, tuple(recipients)))
        return f"q{len(RELAYED)}"

    def deliver_local(user, raw, *, mail_from="", mailbox="INBOX"):
        if kill is not None:
            kill.check("deliver", user)
        return store.append(user, mailbox, f"Return-Path: <{mail_from}>\r\n".encode() + raw)

    def unused(*_a, **_k):
        raise AssertionError("not used here")

    return DomainServices(domain=CORP, role="organisation", store=store,
                          accounts=Accounts({u: "pw" for u in USERS}), local_domains=[CORP],
                          config=settings or {}, mail=SimpleNamespace(deliver_local=deliver_local, save_sent_copy=unused),
                          held_mail=SimpleNamespace(held=lambda: [], discard=unused),
                          submitter=SimpleNamespace(submit=submit, release=unused), tasks=Spawned())


@pytest.fixture(params=["memory", "maildir"])
def lab_store(request, tmp_path):
    """(a killable store with alice's Sent copy and the original in bob's and carol's INBOX, restart())."""
    root = tmp_path / "mail"
    store = killable(MemoryStore)() if request.param == "memory" else killable(MaildirStore)(root)
    for user in USERS:
        store.ensure_user(user)
    sent(store)
    for user in (BOB, CAROL):
        store.append(user, "INBOX", original())
    opened = [store]

    def restart():
        """What the restarted server works on: the same directory opened again (memory: the same store)."""
        if request.param == "memory":
            return store
        again = MaildirStore(root)
        opened.append(again)
        return again

    yield store, restart
    for s in reversed(opened):
        s.close()


def copies(store) -> dict[str, int]:
    return {user: len(store.find_by_message_id(user, ORIGINAL)) for user in (BOB, CAROL)}


def replacement_copies(store) -> dict[str, int]:
    return {user: sum("replaced" in store.fetch_raw(user, "INBOX", r.uid).decode(errors="replace")
                      for r in store.messages(user, "INBOX")) for user in (BOB, CAROL)}


async def recall_killed_at(store, where: tuple[str, str], action=RecallAction.DELETE) -> None:
    kill = Kill(where)
    type(store).kill = kill
    services = services_for(store, kill=kill)
    replacement = None
    if action is RecallAction.REPLACE:
        from email.message import EmailMessage

        replacement = EmailMessage()
        replacement["From"], replacement["Subject"] = ALICE, "Numbers (replaced)"
        replacement.set_content("the replaced numbers\n")
    d = delivery(recall(recipients=EVERYONE, action=action, replacement=replacement), recipients=EVERYONE)
    with pytest.raises(Killed):
        await RecallPolicy({}, services).on_delivery(d, services)
        await filed(services)  # the report is filed after the recall, by a task of the domain's: killed there


async def restart_and_finish(store) -> DomainServices:
    services = services_for(store)
    await RecallPolicy({}, services).start(services)
    return services


@pytest.mark.parametrize("where", [("expunge", CAROL), ("deliver", ALICE)], ids=["mid-removal", "before-report"])
async def test_a_recall_killed_half_way_is_finished_at_the_next_start(lab_store, where) -> None:
    store, restart = lab_store
    await recall_killed_at(store, where)
    if where[1] == CAROL:
        assert copies(store) == {BOB: 0, CAROL: 1}, "killed after bob's copy went, before carol's"
    assert reports(store) == []
    [record] = store.unfinished_operations().values()
    assert record["kind"] == OPERATION_KIND

    again = restart()
    services = await restart_and_finish(again)
    assert copies(again) == {BOB: 0, CAROL: 0}
    [report] = reports(again)
    assert report.statuses == {BOB: RecallStatus.RECALLED, CAROL: RecallStatus.RECALLED,
                               DAVE: RecallStatus.EXTERNAL}
    assert again.unfinished_operations() == {}
    assert [e["event"] for e in services.audit_log] == ["recall-resumed"]

    await restart_and_finish(again)  # starting again finds nothing left to do
    assert len(reports(again)) == 1


async def test_a_replace_killed_between_replacements_delivers_each_once(lab_store) -> None:
    store, restart = lab_store
    RELAYED.clear()
    await recall_killed_at(store, ("deliver", CAROL), RecallAction.REPLACE)
    assert copies(store) == {BOB: 0, CAROL: 0} and replacement_copies(store) == {BOB: 1, CAROL: 0}
    assert RELAYED == [(ALICE, (DAVE,))]  # the external recipient's replacement went to the relay first
    again = restart()
    await restart_and_finish(again)
    assert replacement_copies(again) == {BOB: 1, CAROL: 1}
    assert RELAYED == [(ALICE, (DAVE,))]  # and not twice
    assert len(reports(again)) == 1 and again.unfinished_operations() == {}


async def test_a_finished_recall_leaves_no_record(lab_store) -> None:
    store, _restart = lab_store
    services = services_for(store)
    await RecallPolicy({}, services).on_delivery(delivery(recall(recipients=EVERYONE), recipients=EVERYONE),
                                                 services)
    await filed(services)
    assert copies(store) == {BOB: 0, CAROL: 0} and len(reports(store)) == 1
    assert store.unfinished_operations() == {}


async def test_step_delay_shows_progress_and_a_cancelled_recall_is_finished_later() -> None:
    """recall_step_delay: bob's copy goes, the recall waits, carol's is still there (what IMAP clients see);
    a server stopping then (its tasks cancelled) leaves the record, and the next start finishes it."""
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    sent(store)
    for user in (BOB, CAROL):
        store.append(user, "INBOX", original())
    first_gone = asyncio.Event()
    store.subscribe(lambda e: first_gone.set() if isinstance(e, MessagesExpunged) else None)
    services = services_for(store, {"recall_step_delay": 30})
    d = delivery(recall(recipients=EVERYONE), recipients=EVERYONE)
    task = asyncio.create_task(RecallPolicy(services.config, services).on_delivery(d, services))
    await asyncio.wait_for(first_gone.wait(), 10)
    assert sorted(copies(store).values()) == [0, 1] and reports(store) == []
    assert len(store.unfinished_operations()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await restart_and_finish(store)
    assert copies(store) == {BOB: 0, CAROL: 0} and len(reports(store)) == 1


@pytest.mark.parametrize("value", [-1, "1", True, 601])
def test_step_delay_is_checked(value) -> None:
    with pytest.raises(ValueError, match="recall_step_delay"):
        RecallPolicy({"recall_step_delay": value}, services_for(MemoryStore()))
