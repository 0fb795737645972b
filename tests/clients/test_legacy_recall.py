"""Legacy recall carried out by the desktop client, end to end over the lab's SMTP and IMAP servers."""

from __future__ import annotations

import aiosmtplib
import pytest

from recall_lab.fake_servers.recall.format import (
    RecallInstruction,
    RecallStatus,
    build_recall_message,
    parse_notice,
)
from recall_lab.harness.clients.desktop import DesktopClient
from recall_lab.harness.clients.legacy_recall import OriginalCopy, decide
from recall_lab.harness.own_name import client_name
from tests.clients.conftest import make_message, new_mid

ALICE, BOB = "alice@corp.example", "bob@corp.example"


async def submit(lab, sender: str, recipients: list[str], raw) -> None:
    endpoint = lab.submission("corp.example")
    await aiosmtplib.send(raw, sender=sender, recipients=recipients, hostname=endpoint.host, port=endpoint.port,
                          username=sender, password=lab.password(sender), start_tls=False,
                          local_hostname=client_name(sender))


async def send_original(lab, mid: str, subject: str = "Salary review") -> None:
    await submit(lab, ALICE, [BOB], make_message(mid, subject=subject))


async def send_recall(lab, mid: str, subject: str = "Salary review", sender: str = ALICE) -> None:
    instruction = RecallInstruction(original_message_id=mid, original_subject=subject, sender=sender, to=(BOB,))
    await submit(lab, sender, [BOB], build_recall_message(instruction))


def notices_in_inbox(lab, user: str) -> list:
    store = lab.store("corp.example")
    found = []
    for record in store.messages(user, "INBOX"):
        notice = parse_notice(store.fetch_raw(user, "INBOX", record.uid))
        if notice is not None:
            found.append(notice)
    return found


def bob(lab, **kw) -> DesktopClient:
    return DesktopClient(BOB, lab.password(BOB), lab.imap("corp.example"), submission=lab.submission("corp.example"),
                         process_recalls_on_arrival=True, **kw)


async def test_unread_original_in_the_same_folder_is_recalled(legacy_lab) -> None:
    mid = new_mid()
    async with bob(legacy_lab) as client:
        await send_original(legacy_lab, mid)
        await client.wait_for_message(mid)
        await send_recall(legacy_lab, mid)
        event = await client.wait_for_event("notice-sent", timeout=5)
        assert event.data["status"] == "recalled"
        assert not client.has_message_id(mid)
        assert [n.kind for n in client.notices] == ["recalled"]
    await legacy_lab.wait_idle()
    assert legacy_lab.store("corp.example").find_by_message_id(BOB, mid) == []
    [notice] = notices_in_inbox(legacy_lab, ALICE)
    assert notice.status is RecallStatus.RECALLED and notice.recipient == BOB


async def test_read_original_stays_and_the_sender_learns_it_failed(legacy_lab) -> None:
    mid = new_mid()
    async with bob(legacy_lab) as client:
        await send_original(legacy_lab, mid)
        await client.wait_for_message(mid)
        await client.open(mid)
        await send_recall(legacy_lab, mid)
        event = await client.wait_for_event("notice-sent", timeout=5)
        assert event.data["status"] == "failed-read"
        assert client.has_message_id(mid)  # both stay
        assert client.notices[-1].kind == "recall-failed"
        assert "would like to recall" in client.notices[-1].text
    await legacy_lab.wait_idle()
    assert legacy_lab.store("corp.example").find_by_message_id(BOB, mid)
    assert [n.status for n in notices_in_inbox(legacy_lab, ALICE)] == [RecallStatus.FAILED_READ]


async def test_original_moved_by_a_rule_is_not_recalled(legacy_lab) -> None:
    mid = new_mid()
    legacy_lab.store("corp.example").create_mailbox(BOB, "Projects")
    async with bob(legacy_lab) as client:
        await send_original(legacy_lab, mid)
        await client.wait_for_message(mid)
        await client.move(mid, "Projects")
        await client.wait_for_gone(mid)
        await send_recall(legacy_lab, mid)
        event = await client.wait_for_event("notice-sent", timeout=5)
        assert event.data["status"] == "failed-moved"
    await legacy_lab.wait_idle()
    [location] = legacy_lab.store("corp.example").find_by_message_id(BOB, mid)
    assert location.mailbox == "Projects"


async def test_recall_waits_for_an_offline_client(legacy_lab) -> None:
    """Legacy recall needs the recipient's client: while it is offline nothing happens."""
    mid = new_mid()
    async with bob(legacy_lab) as client:
        await send_original(legacy_lab, mid)
        await client.wait_for_message(mid)
        await client.go_offline()
        await send_recall(legacy_lab, mid)
        await legacy_lab.wait_idle()
        assert legacy_lab.store("corp.example").find_by_message_id(BOB, mid)
        await client.go_online()
        event = await client.wait_for_event("notice-sent", timeout=5)
        assert event.data["status"] == "recalled"
    assert legacy_lab.store("corp.example").find_by_message_id(BOB, mid) == []


async def test_recalls_are_ignored_when_processing_is_off(legacy_lab) -> None:
    mid = new_mid()
    client = DesktopClient(BOB, "bob-password", legacy_lab.imap("corp.example"))
    async with client:
        await send_original(legacy_lab, mid)
        await send_recall(legacy_lab, mid)
        await legacy_lab.wait_idle()
        await client.settle()
        assert client.has_message_id(mid)
        assert not client.events_of("recall")


@pytest.mark.parametrize(
    ("copies", "status"),
    [
        ([], RecallStatus.NOT_FOUND),
        ([OriginalCopy("INBOX", False)], RecallStatus.RECALLED),
        ([OriginalCopy("INBOX", True)], RecallStatus.FAILED_READ),
        ([OriginalCopy("INBOX", False), OriginalCopy("INBOX", True)], RecallStatus.FAILED_READ),
        ([OriginalCopy("Projects", False)], RecallStatus.FAILED_MOVED),
        ([OriginalCopy("INBOX", False), OriginalCopy("Projects", False)], RecallStatus.RECALLED),
    ],
)
def test_decide(copies, status) -> None:
    decision = decide("INBOX", copies)
    assert decision.status is status
    assert decision.delete_from == (("INBOX",) if status is RecallStatus.RECALLED else ())
