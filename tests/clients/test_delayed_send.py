"""Delayed send: held in the sender's Outbox, cancellable over IMAP within the window, sent after it."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from recall_lab.fake_servers.policies.delayed_send import OUTBOX, delay_from, delayed_send_for
from recall_lab.harness.clients.connection import ImapConnection
from tests.clients.conftest import make_message, new_mid

ALICE, BOB, CAROL, DAVE = "alice@corp.example", "bob@corp.example", "carol@corp.example", "dave@mail.example"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def delayed_lab():
    from recall_lab.harness.config import default_config
    from recall_lab.harness.lab import Lab

    config = default_config()
    config.domain("corp.example").policies["delayed_send_seconds"] = 30
    async with Lab(config, store="memory", clock=FakeClock()) as lab:
        yield lab


def policy_with_fake_clock(lab) -> tuple:
    """The domain's delayed-send policy and the fake clock the lab was built with (the servers keep time by it)."""
    policy = delayed_send_for(lab.services("corp.example"))
    assert policy is not None and isinstance(lab.clock, FakeClock)
    return policy, lab.clock


async def submit(lab, mid: str, to: list[str]) -> None:
    endpoint = lab.submission("corp.example")
    await aiosmtplib.send(make_message(mid, to=", ".join(to)), sender=ALICE, recipients=to, hostname=endpoint.host,
                          port=endpoint.port, username=ALICE, password="alice-password", start_tls=False,
                          local_hostname="corp.example")


async def alice_imap(lab) -> ImapConnection:
    endpoint = lab.imap("corp.example")
    return await ImapConnection(endpoint.host, endpoint.port, ALICE, "alice-password").open()


def has(lab, user: str, mid: str, mailbox: str | None = None) -> bool:
    domain = user.rpartition("@")[2]
    return any(mailbox is None or loc.mailbox == mailbox
               for loc in lab.store(domain).find_by_message_id(user, mid))


async def test_held_in_the_outbox_and_cancelled_over_imap_within_the_window(delayed_lab) -> None:
    lab = delayed_lab
    mid = new_mid()
    await submit(lab, mid, [BOB, DAVE])
    policy, clock = policy_with_fake_clock(lab)
    assert has(lab, ALICE, mid, OUTBOX) and not has(lab, BOB, mid)
    conn = await alice_imap(lab)
    try:
        await conn.select(OUTBOX)  # what the sender sees: her pending message
        uids = await conn.uid_search("ALL")
        assert len(uids) == 1
        await conn.uid_store(str(uids[0]), "+FLAGS.SILENT", r"(\Deleted)")
        await conn.uid_expunge(str(uids[0]))  # cancel
    finally:
        await conn.logout()
    assert policy.pending() == []
    clock.now += 3600
    assert await policy.release_due() == 0
    await lab.wait_idle()
    assert not has(lab, BOB, mid) and not has(lab, DAVE, mid) and not has(lab, ALICE, mid, "Sent")
    events = [e["event"] for e in lab.audit_log("corp.example")]
    assert "delayed-send-cancelled" in events and "delayed-send-released" not in events


async def test_sent_when_the_window_ends_and_then_too_late_to_cancel(delayed_lab) -> None:
    lab = delayed_lab
    mid = new_mid()
    await submit(lab, mid, [BOB, DAVE])
    policy, clock = policy_with_fake_clock(lab)
    clock.now += 29
    assert await policy.release_due() == 0 and not has(lab, BOB, mid)
    clock.now += 2
    assert await policy.release_due() == 1
    await lab.wait_idle()
    assert has(lab, BOB, mid, "INBOX") and has(lab, DAVE, mid, "INBOX") and has(lab, ALICE, mid, "Sent")
    assert not has(lab, ALICE, mid, OUTBOX)  # nothing left to delete: cancelling is no longer possible
    assert not policy.cancel(mid)


async def test_the_outbox_copy_names_the_bcc_recipients_but_what_is_sent_does_not(delayed_lab) -> None:
    """The Outbox copy stands in for the Sent copy: the sender's program must find every recipient in it
    (to recall a held message from everyone); the recipients never see the Bcc."""
    lab = delayed_lab
    mid = new_mid()
    endpoint = lab.submission("corp.example")
    await aiosmtplib.send(make_message(mid, to=f"{BOB}, {DAVE}"), sender=ALICE, recipients=[BOB, DAVE, CAROL],
                          hostname=endpoint.host, port=endpoint.port, username=ALICE, password="alice-password",
                          start_tls=False, local_hostname="corp.example")
    policy, clock = policy_with_fake_clock(lab)
    store = lab.store("corp.example")
    [loc] = store.find_by_message_id(ALICE, mid)
    assert b"\r\nBcc: carol@corp.example\r\n" in store.fetch_raw(ALICE, OUTBOX, loc.uid)
    clock.now += 31
    assert await policy.release_due() == 1
    await lab.wait_idle()
    [loc] = store.find_by_message_id(CAROL, mid)
    assert b"Bcc:" not in store.fetch_raw(CAROL, loc.mailbox, loc.uid)


async def test_the_timer_sends_by_itself() -> None:
    from recall_lab.harness.config import default_config
    from recall_lab.harness.lab import Lab

    config = default_config()
    config.domain("corp.example").policies["delayed_send_seconds"] = 0.05  # on the real clock
    async with Lab(config, store="memory") as lab:
        await _sends_by_itself(lab)


async def _sends_by_itself(lab) -> None:
    mid = new_mid()
    arrived = asyncio.Event()
    store = lab.store("corp.example")

    def listener(event) -> None:
        if getattr(event, "user", None) == BOB and getattr(getattr(event, "record", None), "message_id", None) == mid:
            arrived.set()

    store.subscribe(listener)
    try:
        await submit(lab, mid, [BOB])
        await asyncio.wait_for(arrived.wait(), 5)
    finally:
        store.unsubscribe(listener)
    assert not has(lab, ALICE, mid, OUTBOX)


async def test_cancel_through_the_lab_api(delayed_lab) -> None:
    lab = delayed_lab
    mid = new_mid()
    await submit(lab, mid, [BOB])
    policy, clock = policy_with_fake_clock(lab)
    assert [p.message_id for p in policy.pending()] == [mid]
    assert policy.cancel(mid)
    assert not has(lab, ALICE, mid, OUTBOX)
    clock.now += 60
    assert await policy.release_due() == 0
    assert not has(lab, BOB, mid)


async def test_recall_messages_are_not_delayed(delayed_lab) -> None:
    from recall_lab.fake_servers.recall.format import RecallInstruction, build_recall_message

    lab = delayed_lab
    instruction = RecallInstruction(original_message_id="<x@corp.example>", original_subject="s", sender=ALICE,
                                    to=(BOB,))
    endpoint = lab.submission("corp.example")
    await aiosmtplib.send(build_recall_message(instruction), sender=ALICE, recipients=[BOB], hostname=endpoint.host,
                          port=endpoint.port, username=ALICE, password="alice-password", start_tls=False,
                          local_hostname="corp.example")
    assert delayed_send_for(lab.services("corp.example")).pending() == []


async def test_off_by_default(lab) -> None:
    mid = new_mid()
    await submit(lab, mid, [BOB])
    await lab.wait_idle()
    assert has(lab, BOB, mid, "INBOX")


@pytest.mark.parametrize("bad", [-1, "30", True])
def test_bad_setting(bad) -> None:
    with pytest.raises(ValueError, match="delayed_send_seconds"):
        delay_from({"delayed_send_seconds": bad})
    with pytest.raises(ValueError, match="policies.delayed_send "):
        delay_from({"delayed_send": bad})


def test_setting_and_alias() -> None:
    assert delay_from({}) == 0 and delay_from({"delayed_send": None}) == 0
    assert delay_from({"delayed_send": 60}) == 60.0
    assert delay_from({"delayed_send_seconds": 5, "delayed_send": 60}) == 5.0


async def test_send_now_and_release_behind_the_policys_back(delayed_lab) -> None:
    lab = delayed_lab
    first, second = new_mid(), new_mid()
    await submit(lab, first, [BOB])
    await submit(lab, second, [BOB])
    policy, _clock = policy_with_fake_clock(lab)
    assert await policy.release_now(first)
    assert not await policy.release_now(first)  # already sent
    [held] = [d for d in lab.services("corp.example").held() if d.message_id == second]
    await lab.services("corp.example").release(held.queue_id)  # a driver using DomainServices directly
    assert policy.pending() == []  # the policy noticed and dropped the Outbox copy
    await lab.wait_idle()
    assert has(lab, BOB, first, "INBOX") and has(lab, BOB, second, "INBOX")
    assert not has(lab, ALICE, first, OUTBOX) and not has(lab, ALICE, second, OUTBOX)


async def test_a_held_message_survives_a_restart_with_maildir(tmp_path) -> None:
    from recall_lab.harness.config import default_config
    from recall_lab.harness.lab import Lab

    config = default_config()
    config.domain("corp.example").policies["delayed_send_seconds"] = 30
    mid = new_mid()
    async with Lab(config, store=f"maildir:{tmp_path}") as lab:
        await submit(lab, mid, [BOB])
        assert [p.message_id for p in delayed_send_for(lab.services("corp.example")).pending()] == [mid]
    async with Lab(config, store=f"maildir:{tmp_path}", clock=FakeClock()) as lab:
        policy, clock = policy_with_fake_clock(lab)
        [pending] = policy.pending()
        assert pending.message_id == mid
        assert has(lab, ALICE, mid, OUTBOX) and not has(lab, BOB, mid)
        clock.now += 31
        assert await policy.release_due() == 1
        await lab.wait_idle()
        assert has(lab, BOB, mid, "INBOX") and not has(lab, ALICE, mid, OUTBOX)
