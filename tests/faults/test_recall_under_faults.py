"""What faults do to a recall, over the real servers: a relay outage at the recipient's provider that delays
the recall behind the reader, and a recipient server that rejects the recall.

These are the two fault scenarios of docs/faults.md, played step by step with the lab's own clients (the
RecallAgent, imapclient reading as a mail program does); the matrix measures them as the rows
`relay-outage-recall` and `recipient-rejects-recall` (tests/scenarios/test_fault_rows.py).
"""

from __future__ import annotations

import asyncio

import pytest

from recall_lab.fake_servers.recall.format import RecallStatus
from recall_lab.harness.recall_agent import RecallAgent, RecallAgentError
from tests.recall.conftest import (
    ALICE,
    BOB,
    DAVE,
    EXT,
    TIMEOUT,
    open_message,
    password,
    recall_lab,
    send,
    server_state,
    with_imap,
)


async def test_relay_outage_delays_the_recall_behind_the_reader():
    clock = [0.0]
    async with recall_lab("cloud", clock=lambda: clock[0]) as lab:
        mid = await send(lab, ALICE, to=[DAVE])  # delivered to dave before the outage
        lab.faults(EXT).add("outage=0-600")  # mail.example's MX says 421 for the next 600 s of its clock
        handle = await RecallAgent(lab, ALICE, password(ALICE)).recall(mid)
        report = await handle.report(timeout=TIMEOUT)
        assert report.statuses == {DAVE: RecallStatus.EXTERNAL}  # the recall goes on to dave as mail...
        relay = lab.server("corp.example").relay
        await asyncio.wait_for(relay.wait_until(lambda: any(e.attempts for e in relay.pending())), 10)
        [waiting] = relay.pending()
        assert waiting.recipients == [DAVE] and "421 4.3.2" in waiting.last_error  # ...and waits for the MX
        await open_message(lab, DAVE, mid)  # meanwhile dave reads the original
        clock[0] = 601.0  # the outage is over: the next retry hands the recall over
        lab.retry_relay_now()  # without waiting out the relay's backoff
        await lab.wait_idle(10)
        inbox = {str(c.headers["Subject"]): c for c in await server_state(lab, DAVE) if c.folder == "INBOX"}
        assert set(inbox) == {"Quarterly numbers", "Recall: Quarterly numbers"}
        assert b"\\Seen" in inbox["Quarterly numbers"].flags  # read before the recall could even arrive
        assert b"\\Seen" not in inbox["Recall: Quarterly numbers"].flags
        fired = lab.faults(EXT).fired
        assert fired and {f.action for f in fired} == {"outage 421"}


async def test_recipient_server_rejects_the_recall_and_the_sender_gets_a_dsn():
    async with recall_lab("cloud") as lab:
        mid = await send(lab, ALICE, to=[DAVE])
        lab.faults(EXT).add("data=550:status=5.7.1:text=Message rejected by policy:on=mx:next=1")
        handle = await RecallAgent(lab, ALICE, password(ALICE)).recall(mid)
        assert (await handle.report(timeout=TIMEOUT)).statuses == {DAVE: RecallStatus.EXTERNAL}
        await lab.wait_idle(10)
        dave = [c for c in await server_state(lab, DAVE) if c.folder == "INBOX"]
        assert [c.message_id for c in dave] == [mid]  # the original stays; the recall never arrived
        alice = [c for c in await server_state(lab, ALICE) if c.folder == "INBOX"]
        [dsn] = [c for c in alice if c.headers.get_content_type() == "multipart/report"]
        raw = await with_imap(lab, ALICE, lambda c: (c.select_folder("INBOX", readonly=True),
                                                    c.fetch([dsn.uid], ["BODY.PEEK[]"]))[1][dsn.uid][b"BODY[]"])
        assert b"550 5.7.1 Message rejected by policy" in raw
        assert b"Subject: Recall: Quarterly numbers" in raw  # what came back is the recall


@pytest.mark.parametrize("mode", ["cloud", "legacy"])
async def test_own_server_rejects_the_recall_at_submission(mode):
    """Inside the organisation the recipient's server is the sender's: a refused recall is an error the
    agent reports at once, and bob's copy stays."""
    async with recall_lab(mode) as lab:
        mid = await send(lab, ALICE, to=[BOB])
        lab.faults("corp.example").add("data=451:on=submission:next=1")
        with pytest.raises(RecallAgentError, match="451"):
            await RecallAgent(lab, ALICE, password(ALICE)).recall(mid)
        await lab.wait_idle(10)
        assert [c.folder for c in await server_state(lab, BOB) if c.message_id == mid] == ["INBOX"]
