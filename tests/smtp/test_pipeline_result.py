"""Pipeline.run decides and returns; it never delivers, holds or calls back into the domain.

Why these tests: the domain's intake acts on the result (docs/pipeline.md), so the result must say everything
(which recipients are local, which relayed, who held or consumed, the refusal's reply) and running the policies
must touch none of the services a policy did not ask for. No sockets, no store writes: every service the
pipeline could reach raises.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.pipeline import (
    Consumed,
    Deliver,
    Delivery,
    DomainServices,
    Hold,
    Pipeline,
    PolicyReject,
    Rejected,
    Verdict,
)
from recall_lab.fake_servers.store.memory import MemoryStore

CORP = "corp.example"


def _untouchable(*_a: object, **_k: object) -> None:
    raise AssertionError("the pipeline must not call back into the domain")


def services() -> DomainServices:
    return DomainServices(domain=CORP, role="organisation", store=MemoryStore(), accounts=Accounts({}),
                          local_domains=[CORP], config={},
                          mail=SimpleNamespace(deliver_local=_untouchable, save_sent_copy=_untouchable),
                          held_mail=SimpleNamespace(held=_untouchable, discard=_untouchable),
                          submitter=SimpleNamespace(submit=_untouchable, release=_untouchable),
                          tasks=SimpleNamespace(spawn=_untouchable))


class Says:
    """A policy that answers one way and remembers that it ran."""

    def __init__(self, name: str, answer: Verdict | PolicyReject) -> None:
        self.name = name
        self.answer = answer
        self.ran = 0

    async def on_delivery(self, delivery: Delivery, services: DomainServices) -> Verdict:
        self.ran += 1
        if isinstance(self.answer, PolicyReject):
            raise self.answer
        return self.answer


def delivery(*recipients: str) -> Delivery:
    return Delivery(domain=CORP, channel="submission", auth_user="alice@corp.example",
                    mail_from="alice@corp.example", recipients=list(recipients), raw=b"Subject: x\r\n\r\nx\r\n",
                    queue_id="Q1", save_sent_copy=True)


async def test_continue_returns_local_and_remote_recipients_once_each():
    d = delivery("bob@corp.example", "Bob@Corp.Example", "x@mail.example", "carol@CORP.example", "X@mail.example")
    result = await Pipeline([Says("a", Verdict.CONTINUE)], services()).run(d)
    assert result == Deliver(d, ("bob@corp.example", "carol@CORP.example"), ("x@mail.example",))


@pytest.mark.parametrize(("verdict", "kind"), [(Verdict.HOLD, Hold), (Verdict.CONSUMED, Consumed)])
async def test_hold_and_consume_stop_the_policies_and_name_the_policy(verdict, kind):
    first, second = Says("first", verdict), Says("second", Verdict.CONTINUE)
    d = delivery("bob@corp.example")
    result = await Pipeline([first, second], services()).run(d)
    assert result == kind(d, "first") and second.ran == 0
    assert d.held_by == ("first" if verdict is Verdict.HOLD else None)


async def test_a_refusal_is_returned_with_its_reply():
    refusal = PolicyReject("no thanks", 554, "5.7.0")
    gate, after = Says("gate", refusal), Says("after", Verdict.CONTINUE)
    d = delivery("bob@corp.example")
    result = await Pipeline([gate, after], services()).run(d)
    assert isinstance(result, Rejected) and result.policy == "gate" and result.error is refusal
    assert result.reply == "554 5.7.0 no thanks" and after.ran == 0


async def test_a_release_resumes_after_the_holding_policy():
    first, holder, last = Says("first", Verdict.CONTINUE), Says("holder", Verdict.HOLD), Says("last", Verdict.CONTINUE)
    d = delivery("x@mail.example")
    result = await Pipeline([first, holder, last], services()).run(d, start_after="holder")
    assert result == Deliver(d, (), ("x@mail.example",))
    assert (first.ran, holder.ran, last.ran) == (0, 0, 1)


async def test_a_policy_crash_propagates_and_a_non_verdict_is_refused():
    class Crash:
        name = "crash"

        async def on_delivery(self, delivery: Delivery, services: DomainServices) -> Verdict:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await Pipeline([Crash()], services()).run(delivery("bob@corp.example"))
    with pytest.raises(TypeError, match="not a Verdict"):
        await Pipeline([Says("odd", "continue")], services()).run(delivery("bob@corp.example"))  # type: ignore[arg-type]
