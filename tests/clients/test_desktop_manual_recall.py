"""The desktop client with Outlook's automatic processing turned off (`process_recalls_on_arrival=False`): a
classic recall is acted on only when the user opens the recall message, with the classic rule.

Microsoft's scenario table (docs/recall-sources.md section 2): with the setting off, whether the recall works
"depends on which e-mail is opened first": the recall message first, while the original is unread, deletes the
original; the original first, and the recall fails (both stay). Everything runs over real SMTP and IMAP: alice's
agent submits the recall in legacy mode, bob's client hears it arrive, bob opens what he opens, and alice's
report is completed by the notice his client sends.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from recall_lab.fake_servers.recall.format import RecallStatus
from recall_lab.harness.clients.desktop import DesktopClient
from recall_lab.harness.recall_agent import RecallAgent
from tests.recall.conftest import ALICE, BOB, CORP, TIMEOUT, locations, password, recall_lab, send

S = RecallStatus


@asynccontextmanager
async def recalled_while_bob_does_nothing(process_recalls_on_arrival: bool = False, open_original: bool = False):
    """Bob's client running; alice's original arrives (bob opens it first if `open_original`), alice recalls it
    and the recall message reaches bob's cache. Yields (lab, client, original's Message-ID, recall handle)."""
    async with recall_lab("legacy") as lab:
        client = DesktopClient(BOB, password(BOB), lab.imap(CORP), submission=lab.submission(CORP),
                               process_recalls_on_arrival=process_recalls_on_arrival, timeout=TIMEOUT)
        async with client:
            mid = await send(lab, ALICE, to=[BOB])
            await client.wait_for_message(mid, timeout=TIMEOUT)
            if open_original:
                await client.open(mid)
            handle = await RecallAgent(lab, ALICE, password(ALICE)).recall(mid)
            await client.wait_for_message(handle.recall_message_id, timeout=TIMEOUT)
            await client.settle()
            yield lab, client, mid, handle


async def test_without_automatic_processing_the_recall_waits_for_the_user() -> None:
    async with recalled_while_bob_does_nothing() as (lab, client, mid, handle):
        await lab.wait_idle()
        assert client.events_of("recall") == [] and client.sent_notices == []
        assert client.has_message_id(mid) and await locations(lab, BOB, mid) == ["INBOX"]
        report = await handle.report(timeout=TIMEOUT)
        assert report.statuses == {BOB: S.PENDING}


async def test_opening_the_recall_message_first_deletes_the_unread_original() -> None:
    async with recalled_while_bob_does_nothing() as (lab, client, mid, handle):
        assert await client.open_recall(mid) is not None
        report = await handle.report(timeout=TIMEOUT, until_complete=True)
        assert report.statuses == {BOB: S.RECALLED}
        assert not client.has_message_id(mid) and await locations(lab, BOB, mid) == []
        assert not client.has_message_id(handle.recall_message_id)  # the recall message goes too, as on arrival
        assert [n.kind for n in client.notices] == ["recalled"]


async def test_opening_the_original_first_makes_the_recall_fail_and_both_stay() -> None:
    async with recalled_while_bob_does_nothing(open_original=True) as (lab, client, mid, handle):
        assert client.events_of("recall") == []  # nothing happened on arrival
        await client.open_recall(mid)
        report = await handle.report(timeout=TIMEOUT, until_complete=True)
        assert report.statuses == {BOB: S.FAILED_READ}
        assert client.has_message_id(mid) and client.has_message_id(handle.recall_message_id)
        assert await locations(lab, BOB, mid) == ["INBOX"]
        assert [n.kind for n in client.notices] == ["recall-failed"]


async def test_the_users_open_of_the_recall_message_reaches_the_same_rule() -> None:
    async with recalled_while_bob_does_nothing() as (lab, client, mid, handle):
        await client.open(handle.recall_message_id)  # the recall message, opened like any message
        report = await handle.report(timeout=TIMEOUT, until_complete=True)
        assert report.statuses == {BOB: S.RECALLED}
        assert await locations(lab, BOB, mid) == []


async def test_a_recall_processed_on_arrival_is_not_processed_again_when_opened() -> None:
    async with recalled_while_bob_does_nothing(process_recalls_on_arrival=True, open_original=True) as (
            lab, client, mid, handle):
        await client.wait_for_event("notice-sent", timeout=TIMEOUT)
        await client.open(handle.recall_message_id)  # the failed recall's message, still there, read later
        await client.open_recall(mid)
        await lab.wait_idle()
        assert len(client.events_of("recall")) == 1 and len(client.sent_notices) == 1
        report = await handle.report(timeout=TIMEOUT, until_complete=True)
        assert report.statuses == {BOB: S.FAILED_READ}


async def test_open_recall_without_a_recall_message_is_none() -> None:
    async with recall_lab("cloud") as lab:
        client = DesktopClient(BOB, password(BOB), lab.imap(CORP), submission=lab.submission(CORP),
                               timeout=TIMEOUT)
        async with client:
            mid = await send(lab, ALICE, to=[BOB])
            await client.wait_for_message(mid, timeout=TIMEOUT)
            handle = await RecallAgent(lab, ALICE, password(ALICE)).recall(mid)
            await handle.report(timeout=TIMEOUT)
            await client.wait_for_gone(mid, timeout=TIMEOUT)
            # the cloud recall is the server's: no recall message reaches bob, whatever his client's setting
            assert await client.open_recall(mid) is None
