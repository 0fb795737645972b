"""Legacy recall (client-side, as classic Outlook's), one test per row of the mode x condition table.

The server only vouches for the recall (X-Recall-Verified) and delivers it; a desktop client decides. Here the
client is played by the test (`play_legacy_client`: the classic rule, then the notice over submission), so
these rows prove the server side: what it delivers, what it refuses, the pending report, and how notices update
the report the agent reads. Client-driven rows with recall_lab.harness.clients.DesktopClient are in
test_recall_desktop.py.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import aiosmtplib

from recall_lab.fake_servers.policies.retention import retention_for
from recall_lab.fake_servers.recall.format import (
    RecallInstruction,
    RecallNotice,
    RecallStatus,
    build_notice,
    build_recall_message,
    parse_recall_instruction,
)
from recall_lab.harness.recall_agent import RecallAgent

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    CORP,
    DAVE,
    FRANK,
    GRACE,
    HEIDI,
    ORG_ON_BOTH_BACKENDS,
    TIMEOUT,
    IdleWatcher,
    locations,
    move_message,
    open_message,
    password,
    play_legacy_client,
    recall_lab,
    reports_in_inbox,
    send,
    server_state,
    with_imap,
)

S = RecallStatus

#: Every row of the table with the organisation on the lab's own server and on Dovecot.
pytestmark = ORG_ON_BOTH_BACKENDS
#: Where Dovecot differs, and why (strict xfails: tests/recall/conftest.py).
DOVECOT_DIFFERS: dict[str, str] = {
    "test_already_purged_is_not_found_by_the_client":
        "Dovecot pushes one EXISTS for the recall and the test's barrier marker together (batched about 0.5 s; "
        "RFC 9051 allows one EXISTS for several messages), so the test cannot see the recall's own EXISTS; the "
        "outcome (NOT_FOUND, nothing left) is the same",
}


async def start_recall(lab, mid, **kw):
    handle = await RecallAgent(lab, ALICE, password(ALICE)).recall(mid, **kw)
    return handle, await handle.report(timeout=TIMEOUT)


async def vouched_recall_in_inbox(lab, user, mid) -> bool:
    copies = [c for c in await server_state(lab, user) if c.headers.get("X-Recall-Message-ID") == mid]
    return bool(copies) and all(c.folder == "INBOX" and c.headers.get("X-Recall-Verified") == CORP
                                for c in copies)


async def test_unread_pending_then_the_client_deletes_and_the_notice_completes_the_report():
    async with recall_lab("legacy") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        async with IdleWatcher(lab, BOB) as idle:
            handle, first = await start_recall(lab, mid)
            await idle.wait_kind(b"EXISTS")  # the recall is delivered to the INBOX
            assert first.statuses == {BOB: S.PENDING} and first.mode == "legacy"
            assert await locations(lab, BOB, mid) == ["INBOX"]  # the server deleted nothing
            assert await vouched_recall_in_inbox(lab, BOB, mid)
            notice = await play_legacy_client(lab, BOB, mid)
            await idle.wait_kind(b"EXPUNGE")  # the client's deletion
        assert notice.status is S.RECALLED
        final = await handle.report(timeout=TIMEOUT, until_complete=True)
        assert final.statuses == {BOB: S.RECALLED} and final.complete
        assert await locations(lab, BOB, mid) == []
        # in alice's INBOX: the initial report (pending) and bob's notice, both vouched for by her server
        subjects = sorted(str(c.headers["Subject"]) for c in await server_state(lab, ALICE) if c.folder == "INBOX")
        assert subjects == ["Message Recall Report: Quarterly numbers", "Recall Success: Quarterly numbers"]


async def test_cancelling_a_report_wait_stops_its_worker_thread_at_once():
    """F14b: Ctrl-C cancels `await handle.report(...)`; the IMAP wait in its worker thread must end too, or the
    process (asyncio.run waits for its threads) lives on until the whole timeout is over."""
    async with recall_lab("legacy") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        handle, _first = await start_recall(lab, mid)  # bob stays pending: an until_complete wait goes on
        loop = asyncio.get_running_loop()
        scanning, finished = asyncio.Event(), asyncio.Event()
        reader = handle.reader
        scan, wait = reader.scan, reader.wait

        def scan_and_tell(client):
            scan(client)
            loop.call_soon_threadsafe(scanning.set)

        def wait_and_tell(*args):
            try:
                return wait(*args)
            finally:
                loop.call_soon_threadsafe(finished.set)

        reader.scan, reader.wait = scan_and_tell, wait_and_tell
        task = asyncio.create_task(handle.report(timeout=60, until_complete=True))
        await asyncio.wait_for(scanning.wait(), TIMEOUT)  # the thread is in its IDLE loop now
        task.cancel()
        started = loop.time()
        await asyncio.wait_for(finished.wait(), TIMEOUT)
        assert loop.time() - started < 1.0
        assert task.cancelled()


async def test_read_fails_read():
    async with recall_lab("legacy") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        await open_message(lab, BOB, mid)
        handle, first = await start_recall(lab, mid)
        assert first.statuses == {BOB: S.PENDING}
        async with IdleWatcher(lab, BOB) as idle:
            await play_legacy_client(lab, BOB, mid)
            await idle.barrier()
        assert b"EXPUNGE" not in idle.kinds()
        assert (await handle.report(timeout=TIMEOUT, until_complete=True)).statuses == {BOB: S.FAILED_READ}
        assert await locations(lab, BOB, mid) == ["INBOX"]


async def test_moved_fails_moved():
    async with recall_lab("legacy") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        await move_message(lab, BOB, mid, "Projects")
        async with IdleWatcher(lab, BOB, "Projects") as idle:
            handle, first = await start_recall(lab, mid)
            await play_legacy_client(lab, BOB, mid)
            await idle.barrier()
        assert idle.kinds() == []
        assert first.statuses == {BOB: S.PENDING}
        assert (await handle.report(timeout=TIMEOUT, until_complete=True)).statuses == {BOB: S.FAILED_MOVED}
        assert await locations(lab, BOB, mid) == ["Projects"]


async def test_external_recipient():
    async with recall_lab("legacy") as lab:
        mid = await send(lab, ALICE, to=[DAVE])
        async with IdleWatcher(lab, DAVE) as idle:
            handle, report = await start_recall(lab, mid)
            await lab.wait_idle()
            await idle.wait_kind(b"EXISTS")
            await idle.barrier()
        assert idle.kinds() == [b"EXISTS"]
        assert report.statuses == {DAVE: S.EXTERNAL} and report.complete
        assert mid in [c.message_id for c in await server_state(lab, DAVE)]


async def test_already_purged_is_not_found_by_the_client():
    now = [0.0]
    async with recall_lab("legacy", purge_deleted_after=60, clock=lambda: now[0]) as lab:
        retention = retention_for(lab.services(CORP))
        mid = await send(lab, ALICE, to=[BOB])
        await move_message(lab, BOB, mid, "Trash")
        now[0] += 60
        assert await retention.purge_now() == 1
        async with IdleWatcher(lab, BOB) as idle:
            handle, first = await start_recall(lab, mid)
            assert first.statuses == {BOB: S.PENDING}
            await play_legacy_client(lab, BOB, mid)
            await idle.barrier()
        assert idle.kinds() == [b"EXISTS"]  # the recall arrives; the client has nothing to delete
        assert (await handle.report(timeout=TIMEOUT, until_complete=True)).statuses == {BOB: S.NOT_FOUND}
        assert await locations(lab, BOB, mid) == []


async def test_legal_hold_lets_the_client_delete_and_keeps_the_original_in_recoverable_items():
    """A hold keeps items from destruction; it does not stop the deletion the user sees (recall-sources.md s. 3).
    The classic recall reaches the held mailbox's client, whose STORE \\Deleted + EXPUNGE goes through, and the
    store's removal hook keeps the original (and the recall the client deleted with it)."""
    async with recall_lab("classic", legal_hold=[BOB]) as lab:
        mid = await send(lab, ALICE, to=[BOB])
        async with IdleWatcher(lab, BOB) as idle:
            handle, first = await start_recall(lab, mid)
            await idle.wait_kind(b"EXISTS")  # the recall reached bob's INBOX
            assert first.statuses == {BOB: S.PENDING}
            await play_legacy_client(lab, BOB, mid)
            await idle.wait_kind(b"EXPUNGE")  # the client's own deletion
        assert (await handle.report(timeout=TIMEOUT, until_complete=True)).statuses == {BOB: S.RECALLED}
        assert await locations(lab, BOB, mid) == []  # gone from every folder bob's clients can see
        kept = lab.services(CORP).recoverable.items(BOB)
        assert {(i.message_id, i.mailbox, i.reason) for i in kept if i.message_id == mid} == {(mid, "INBOX", "client")}
        assert any(b"X-Recall-Message-ID" in i.raw for i in kept)  # the recall message itself, deleted with it


async def test_replace_delivers_the_recall_with_the_replacement_inside():
    async with recall_lab("legacy") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        replacement = EmailMessage()
        replacement["From"] = f"Alice <{ALICE}>"
        replacement["Subject"] = "Quarterly numbers (final)"
        replacement.set_content("The final numbers.\n")
        async with IdleWatcher(lab, BOB) as idle:
            handle, first = await start_recall(lab, mid, action="replace", replacement=replacement)
            await idle.wait_kind(b"EXISTS")
        assert idle.kinds() == [b"EXISTS"]  # the recall, replacement inside; the original stays for now
        assert first.statuses == {BOB: S.PENDING}
        assert await locations(lab, BOB, mid) == ["INBOX"]
        [copy] = [c for c in await server_state(lab, BOB) if c.headers.get("X-Recall-Message-ID") == mid]
        raw = await with_imap(lab, BOB, lambda c: (c.select_folder("INBOX", readonly=True),
                                                   c.fetch([copy.uid], ["BODY.PEEK[]"])[copy.uid][b"BODY[]"])[1])
        instruction = parse_recall_instruction(raw)
        assert str(instruction.replacement["Subject"]) == "Quarterly numbers (final)"
        await play_legacy_client(lab, BOB, mid)
        assert (await handle.report(timeout=TIMEOUT, until_complete=True)).statuses == {BOB: S.RECALLED}


async def test_forged_recall_and_forged_notice_are_not_vouched_for():
    async with recall_lab("legacy") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        forged = build_recall_message(RecallInstruction(mid, "Quarterly numbers", ALICE, "Alice", to=(BOB,)))
        forged["X-Recall-Verified"] = CORP
        mx = lab.mx(CORP)
        async with IdleWatcher(lab, BOB) as idle:
            await aiosmtplib.send(forged, sender=DAVE, recipients=[BOB], hostname=mx.host, port=mx.port,
                                  start_tls=False, timeout=TIMEOUT, local_hostname="mail.example")
            await lab.wait_idle()
            await idle.wait_kind(b"EXISTS")
            await idle.barrier()
        assert idle.kinds() == [b"EXISTS"]
        assert await locations(lab, BOB, mid) == ["INBOX"]
        assert not await vouched_recall_in_inbox(lab, BOB, mid)  # a desktop client will not act on it
        assert [e["event"] for e in lab.audit_log(CORP)][-2:] == ["recall-mark-stripped", "recall-refused"]

        # a real recall, then a forged "success" notice from outside: the agent's report ignores it
        handle, _first = await start_recall(lab, mid)
        notice = build_notice(RecallNotice(mid, "Quarterly numbers", BOB, S.RECALLED), to=ALICE)
        notice["X-Recall-Verified"] = CORP
        await aiosmtplib.send(notice, sender=BOB, recipients=[ALICE], hostname=mx.host, port=mx.port,
                              start_tls=False, timeout=TIMEOUT, local_hostname=CORP)
        await lab.wait_idle()
        assert lab.audit_log(CORP)[-1]["event"] == "recall-notice-refused"
        report = await handle.report(timeout=0.2, until_complete=True)
        assert report.statuses == {BOB: S.PENDING}
        assert await locations(lab, BOB, mid) == ["INBOX"]


async def test_mixed_recipient_list_in_one_recall():
    now = [0.0]
    async with recall_lab("legacy", legal_hold=[GRACE], purge_deleted_after=60, clock=lambda: now[0]) as lab:
        retention = retention_for(lab.services(CORP))
        mid = await send(lab, ALICE, to=[BOB, CAROL, DAVE], cc=[FRANK, GRACE], bcc=[HEIDI])
        await open_message(lab, CAROL, mid)
        await move_message(lab, FRANK, mid, "Archive")
        await move_message(lab, HEIDI, mid, "Trash")
        now[0] += 60
        assert await retention.purge_now() == 1
        handle, first = await start_recall(lab, mid)
        assert first.statuses == {BOB: S.PENDING, CAROL: S.PENDING, DAVE: S.EXTERNAL, FRANK: S.PENDING,
                                  GRACE: S.PENDING, HEIDI: S.PENDING}
        assert first.pending == (BOB, CAROL, FRANK, GRACE, HEIDI)
        for user in (BOB, CAROL, FRANK, GRACE, HEIDI):
            await play_legacy_client(lab, user, mid)
        final = await handle.report(timeout=TIMEOUT, until_complete=True)
        assert final.statuses == {BOB: S.RECALLED, CAROL: S.FAILED_READ, DAVE: S.EXTERNAL, FRANK: S.FAILED_MOVED,
                                  GRACE: S.RECALLED, HEIDI: S.NOT_FOUND}
        assert await locations(lab, BOB, mid) == []
        assert await locations(lab, CAROL, mid) == ["INBOX"]
        assert await locations(lab, FRANK, mid) == ["Archive"]
        assert await locations(lab, GRACE, mid) == []  # held: out of her view, kept for the organisation
        area = lab.services(CORP).recoverable
        assert [i.reason for i in area.items(GRACE) if i.message_id == mid] == ["client"]
        assert [i.reason for i in area.items(HEIDI) if i.message_id == mid] == ["retention"]
        assert len(await reports_in_inbox(lab, ALICE)) == 1  # one report; the rest came as notices
