"""Cloud recall (server-side, as Exchange Online's), one test per row of the mode x condition table.

Every test goes through real sockets: the original and the recall are submitted over SMTP (the recall by the
RecallAgent, which finds the original in alice's Sent folder over IMAP), the recipients' mailboxes are read
back with imapclient, an imapclient IDLE session records what the server pushed, and the report is read from
alice's INBOX.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from email.message import EmailMessage

import aiosmtplib
import pytest

from recall_lab.fake_servers.policies.retention import retention_for
from recall_lab.fake_servers.recall.format import RecallInstruction, RecallStatus, build_recall_message
from recall_lab.harness.recall_agent import RecallAgent, RecallAgentError

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    CORP,
    DAVE,
    ERIN,
    EXT,
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
    recall_lab,
    reports_in_inbox,
    send,
    server_state,
)

S = RecallStatus

#: Every row of the table with the organisation on the lab's own server and on Dovecot.
pytestmark = ORG_ON_BOTH_BACKENDS
#: Where Dovecot differs, and why (strict xfails: tests/recall/conftest.py).
DOVECOT_DIFFERS: dict[str, str] = {}


async def recall(lab, mid, **kw):
    handle = await RecallAgent(lab, ALICE, password(ALICE)).recall(mid, **kw)
    return await handle.report(timeout=TIMEOUT)


async def test_unread_is_recalled_and_the_idle_session_sees_expunge():
    async with recall_lab("cloud") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        async with IdleWatcher(lab, BOB) as idle:
            report = await recall(lab, mid)
            await idle.wait_kind(b"EXPUNGE")
            await idle.barrier()
        assert idle.kinds() == [b"EXPUNGE"]  # and no EXISTS: the recall itself is not delivered
        assert report.statuses == {BOB: S.RECALLED}
        assert report.mode == "cloud"
        assert await locations(lab, BOB, mid) == []
        assert not [c for c in await server_state(lab, BOB) if c.headers.get("X-Recall-Message-ID")]
        assert await locations(lab, ALICE, mid) == ["Sent"]  # her own copy stays
        assert [r.statuses for r in await reports_in_inbox(lab, ALICE)] == [{BOB: S.RECALLED}]


@pytest.mark.parametrize("external", [False, True])
async def test_a_submitted_recall_gets_one_sent_copy_whoever_its_recipients_are(external):
    """F12: one rule: a submitted recall is filed in Sent once, like any submission, whether the server consumed
    it (local recipients only) or sent it on (to another provider)."""
    async with recall_lab("cloud") as lab:
        others = [DAVE] if external else []
        mid = await send(lab, ALICE, to=[ALICE, BOB, *others], bcc=[CAROL])
        await recall(lab, mid)
        sent = [c for c in await server_state(lab, ALICE) if c.folder == "Sent"]
        assert sorted(str(c.headers["Subject"]) for c in sent) == ["Quarterly numbers", "Recall: Quarterly numbers"]
        [copy] = [c for c in sent if c.headers.get("X-Recall-Message-ID")]
        assert b"\\Seen" in copy.flags and CAROL in str(copy.headers.get("Bcc", ""))


async def test_read_is_recalled_after_read():
    async with recall_lab("cloud") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        await open_message(lab, BOB, mid)
        async with IdleWatcher(lab, BOB) as idle:
            report = await recall(lab, mid)
            await idle.wait_kind(b"EXPUNGE")
        assert report.statuses == {BOB: S.RECALLED_AFTER_READ}
        assert await locations(lab, BOB, mid) == []


async def test_read_stays_when_the_organisation_does_not_recall_read_messages():
    async with recall_lab("cloud", recall_read_messages=False) as lab:
        mid = await send(lab, ALICE, to=[BOB])
        await open_message(lab, BOB, mid)
        async with IdleWatcher(lab, BOB) as idle:
            report = await recall(lab, mid)
            await idle.barrier()
        assert idle.kinds() == []
        assert report.statuses == {BOB: S.FAILED_READ}
        assert await locations(lab, BOB, mid) == ["INBOX"]


async def test_moved_to_another_folder_is_recalled_there():
    async with recall_lab("cloud") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        await move_message(lab, BOB, mid, "Projects")
        async with IdleWatcher(lab, BOB, "Projects", qresync=True) as idle:
            report = await recall(lab, mid)
            await idle.wait_kind(b"VANISHED")  # QRESYNC enabled: VANISHED instead of EXPUNGE
        assert report.statuses == {BOB: S.RECALLED}
        assert "Projects" in report.results[0].detail
        assert await locations(lab, BOB, mid) == []


async def test_external_recipient_keeps_the_original_and_gets_the_recall_as_mail():
    async with recall_lab("cloud") as lab:
        mid = await send(lab, ALICE, to=[DAVE])
        async with IdleWatcher(lab, DAVE) as idle:
            report = await recall(lab, mid)
            await lab.wait_idle()  # the relay to mail.example finished
            await idle.wait_kind(b"EXISTS")
            await idle.barrier()
        assert idle.kinds() == [b"EXISTS"]  # the recall arrives; nothing is expunged
        assert report.statuses == {DAVE: S.EXTERNAL}
        state = await server_state(lab, DAVE)
        assert [c.message_id for c in state if c.folder == "INBOX"][0] == mid
        [recall_copy] = [c for c in state if c.headers.get("X-Recall-Message-ID") == mid]
        assert str(recall_copy.headers["Subject"]) == "Recall: Quarterly numbers"


async def test_already_purged_by_retention_is_not_found():
    now = [0.0]
    async with recall_lab("cloud", purge_deleted_after=3600, clock=lambda: now[0]) as lab:
        retention = retention_for(lab.services(CORP))
        assert retention is not None
        mid = await send(lab, ALICE, to=[BOB])
        await move_message(lab, BOB, mid, "Trash")
        async with IdleWatcher(lab, BOB, "Trash") as idle:
            now[0] += 3599
            assert await retention.purge_now() == 0
            now[0] += 1
            assert await retention.purge_now() == 1
            await idle.wait_kind(b"EXPUNGE")  # the purge
            report = await recall(lab, mid)
            await idle.barrier()
        assert idle.kinds() == [b"EXPUNGE"]  # only the purge; the recall found nothing to expunge
        assert report.statuses == {BOB: S.NOT_FOUND}
        assert await locations(lab, BOB, mid) == []


async def test_in_trash_but_not_yet_purged_is_recalled():
    async with recall_lab("cloud", purge_deleted_after=3600) as lab:
        mid = await send(lab, ALICE, to=[BOB])
        await move_message(lab, BOB, mid, "Trash")
        report = await recall(lab, mid)
        assert report.statuses == {BOB: S.RECALLED}


async def test_legal_hold_removes_from_view_and_keeps_in_recoverable_items():
    async with recall_lab("cloud", legal_hold=[BOB]) as lab:
        mid = await send(lab, ALICE, to=[BOB])
        async with IdleWatcher(lab, BOB) as idle:
            report = await recall(lab, mid)
            await idle.wait_kind(b"EXPUNGE")
        assert report.statuses == {BOB: S.HELD}
        assert await locations(lab, BOB, mid) == []  # gone from every folder an IMAP client can see
        [item] = lab.services(CORP).recoverable.items(BOB)
        assert item.message_id == mid and item.mailbox == "INBOX" and item.reason == "recall"


async def test_replace_delivers_the_replacement():
    async with recall_lab("cloud") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        replacement = EmailMessage()
        replacement["From"] = f"Alice <{ALICE}>"
        replacement["To"] = BOB
        replacement["Subject"] = "Quarterly numbers (final)"
        replacement["Message-ID"] = "<final-numbers@corp.example>"
        replacement.set_content("The final numbers.\n")
        async with IdleWatcher(lab, BOB) as idle:
            report = await recall(lab, mid, action="replace", replacement=replacement)
            await idle.wait_for(lambda _p: idle.kinds()[:2] == [b"EXPUNGE", b"EXISTS"])
        assert report.statuses == {BOB: S.RECALLED}
        inbox = [c for c in await server_state(lab, BOB) if c.folder == "INBOX"]
        assert [(c.message_id, str(c.headers["Subject"])) for c in inbox] == [
            ("<final-numbers@corp.example>", "Quarterly numbers (final)")]


# --- forged or foreign recalls: delivered as ordinary mail, nothing deleted, the attempt logged -------------


async def _assert_refused(lab, idle, mid: str, reason_part: str) -> None:
    await lab.wait_idle()
    await idle.wait_kind(b"EXISTS")  # delivered as ordinary mail
    await idle.barrier()
    assert idle.kinds() == [b"EXISTS"]  # and nothing expunged
    assert await locations(lab, BOB, mid) == ["INBOX"]
    refused = [e for e in lab.audit_log(CORP) if e["event"] == "recall-refused"]
    assert refused and reason_part in refused[-1]["reason"]
    assert await reports_in_inbox(lab, ALICE) == []
    forged = [c for c in await server_state(lab, BOB) if c.headers.get("X-Recall-Message-ID") == mid]
    assert forged and all(c.headers.get("X-Recall-Verified") is None for c in forged)


async def test_forged_recall_from_the_external_domain_via_mx():
    async with recall_lab("cloud") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        forged = build_recall_message(RecallInstruction(mid, "Quarterly numbers", ALICE, "Alice", to=(BOB,)))
        forged["X-Recall-Verified"] = CORP
        mx = lab.mx(CORP)
        async with IdleWatcher(lab, BOB) as idle:
            await aiosmtplib.send(forged, sender=ALICE, recipients=[BOB], hostname=mx.host, port=mx.port,
                                  start_tls=False, timeout=TIMEOUT, local_hostname=CORP)
            await _assert_refused(lab, idle, mid, "arrived via mx")
        assert any(e["event"] == "recall-mark-stripped" for e in lab.audit_log(CORP))


async def test_recall_by_another_user_of_the_organisation():
    async with recall_lab("cloud") as lab:
        mid = await send(lab, ALICE, to=[BOB, CAROL])
        with pytest.raises(RecallAgentError, match="no message"):
            await RecallAgent(lab, CAROL, password(CAROL)).recall(mid)  # not in carol's Sent
        # carol writes the recall herself (properly authenticated as herself)
        forged = build_recall_message(RecallInstruction(mid, "Quarterly numbers", CAROL, "Carol", to=(BOB,)))
        sub = lab.submission(CORP)
        async with IdleWatcher(lab, BOB) as idle:
            await aiosmtplib.send(forged, sender=CAROL, recipients=[BOB], hostname=sub.host, port=sub.port,
                                  username=CAROL, password=password(CAROL), start_tls=False, timeout=TIMEOUT,
                                  local_hostname=CORP)
            await _assert_refused(lab, idle, mid, "sent by carol@corp.example")


async def test_hand_written_recall_headers_with_swaks():
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks not installed")
    async with recall_lab("cloud") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        mx = lab.mx(CORP)
        async with IdleWatcher(lab, BOB) as idle:
            cmd = [swaks, "--server", mx.host, "--port", str(mx.port), "--from", DAVE, "--to", BOB,
                   "--header", f"From: Alice <{ALICE}>", "--header", "Subject: Recall: Quarterly numbers",
                   "--header", f"X-Recall-Message-ID: {mid}", "--header", "X-Recall-Action: delete",
                   "--header", f"X-Recall-Verified: {CORP}", "--body", "please delete it"]
            done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=TIMEOUT)
            assert done.returncode == 0, done.stdout[-500:] + done.stderr[-500:]
            await _assert_refused(lab, idle, mid, "arrived via mx")


# --- all of it in one recall --------------------------------------------------------------------------------


async def test_mixed_recipient_list_in_one_recall():
    now = [0.0]
    async with recall_lab("cloud", legal_hold=[GRACE], purge_deleted_after=3600, clock=lambda: now[0]) as lab:
        retention = retention_for(lab.services(CORP))
        mid = await send(lab, ALICE, to=[BOB, CAROL, DAVE], cc=[FRANK, GRACE], bcc=[HEIDI, ERIN])
        await open_message(lab, CAROL, mid)
        await move_message(lab, FRANK, mid, "Archive")
        await move_message(lab, HEIDI, mid, "Trash")
        now[0] += 3600
        assert await retention.purge_now() == 1
        async with IdleWatcher(lab, BOB) as idle, IdleWatcher(lab, DAVE) as dave_idle:
            report = await recall(lab, mid)
            await idle.wait_kind(b"EXPUNGE")
            await lab.wait_idle()
            await dave_idle.barrier()
        assert report.statuses == {BOB: S.RECALLED, CAROL: S.RECALLED_AFTER_READ, DAVE: S.EXTERNAL,
                                   FRANK: S.RECALLED, GRACE: S.HELD, HEIDI: S.NOT_FOUND, ERIN: S.EXTERNAL}
        assert [r.recipient for r in report.results] == [BOB, CAROL, DAVE, FRANK, GRACE, HEIDI, ERIN]
        for user in (BOB, CAROL, FRANK, GRACE, HEIDI):
            assert await locations(lab, user, mid) == [], user
        assert [i.message_id for i in lab.services(CORP).recoverable.items(GRACE)] == [mid]
        for user in (DAVE, ERIN):
            assert mid in [c.message_id for c in await server_state(lab, user)]
        assert b"EXPUNGE" not in dave_idle.kinds()
        assert EXT in lab.domains


async def test_recall_of_a_message_still_held_by_delayed_send_cancels_it():
    from recall_lab.fake_servers.policies.delayed_send import delayed_send_for

    now = [0.0]
    async with recall_lab("cloud", delayed_send_seconds=3600, clock=lambda: now[0]) as lab:
        delayed = delayed_send_for(lab.services(CORP))
        mid = await send(lab, ALICE, to=[BOB, DAVE])
        assert await locations(lab, ALICE, mid) == ["Outbox"]  # held: not sent yet
        recall_msg = build_recall_message(RecallInstruction(mid, "Quarterly numbers", ALICE, "Alice",
                                                            to=(BOB, DAVE)))
        sub = lab.submission(CORP)
        await aiosmtplib.send(recall_msg, sender=ALICE, recipients=[BOB, DAVE], hostname=sub.host, port=sub.port,
                              username=ALICE, password=password(ALICE), start_tls=False, timeout=TIMEOUT,
                              local_hostname=CORP)
        await lab.wait_idle()
        [report] = await reports_in_inbox(lab, ALICE)
        assert report.statuses == {BOB: S.RECALLED, DAVE: S.RECALLED}
        assert await locations(lab, ALICE, mid) == []  # the Outbox copy went with it
        now[0] += 3600
        assert await delayed.release_due() == 0
        await lab.wait_idle()
        for user in (BOB, DAVE):
            assert await server_state(lab, user) == [], user  # neither the original nor the recall arrived


async def test_agent_recalls_a_message_still_in_the_outbox_bcc_included():
    """F10: the agent finds a held original in the Outbox (Sent is empty until the window ends), Bcc too."""
    from recall_lab.fake_servers.policies.delayed_send import delayed_send_for

    now = [0.0]
    async with recall_lab("cloud", delayed_send_seconds=3600, clock=lambda: now[0]) as lab:
        delayed = delayed_send_for(lab.services(CORP))
        mid = await send(lab, ALICE, to=[BOB, DAVE], bcc=[CAROL])
        assert await locations(lab, ALICE, mid) == ["Outbox"]
        report = await recall(lab, mid)
        assert report.statuses == {BOB: S.RECALLED, DAVE: S.RECALLED, CAROL: S.RECALLED}
        assert all("never delivered" in r.detail for r in report.results)
        assert await locations(lab, ALICE, mid) == []
        now[0] += 3600
        assert await delayed.release_due() == 0
        await lab.wait_idle()
        for user in (BOB, CAROL, DAVE):
            assert await server_state(lab, user) == [], user  # neither the original nor the recall arrived


async def test_cloud_recall_and_legal_hold_on_the_maildir_store(tmp_path):
    async with recall_lab("cloud", store=f"maildir:{tmp_path}", legal_hold=[CAROL]) as lab:
        mid = await send(lab, ALICE, to=[BOB, CAROL])
        await move_message(lab, BOB, mid, "Projects")
        async with IdleWatcher(lab, BOB, "Projects") as idle:
            report = await recall(lab, mid)
            await idle.wait_kind(b"EXPUNGE")
        assert report.statuses == {BOB: S.RECALLED, CAROL: S.HELD}
        assert await locations(lab, BOB, mid) == [] and await locations(lab, CAROL, mid) == []
        assert [i.message_id for i in lab.services(CORP).recoverable.items(CAROL)] == [mid]
        messages = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name in ("cur", "new")]
        holding = {p.relative_to(tmp_path).parts[2] for p in messages if mid.encode() in p.read_bytes()}
        assert holding == {ALICE}  # message files: only alice's Sent copy and her report name it
