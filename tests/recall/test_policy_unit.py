"""The recall, retention and legal-hold policies on a real MemoryStore and real DomainServices, no sockets.

The end-to-end proof over SMTP and IMAP is in test_recall_matrix.py; these pin the decisions themselves
(trust, statuses, what is expunged, what is preserved) where a failure points at one function.
"""

from __future__ import annotations

import asyncio
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from types import SimpleNamespace

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.pipeline import Delivery, DomainServices, Verdict
from recall_lab.fake_servers.policies.legal_hold import LegalHoldPolicy
from recall_lab.fake_servers.policies.retention import RetentionPolicy, retention_for
from recall_lab.fake_servers.recall.format import (
    HEADER_VERIFIED,
    RecallAction,
    RecallInstruction,
    RecallNotice,
    RecallStatus,
    build_notice,
    build_recall_message,
    parse_report,
    verified_by,
)
from recall_lab.fake_servers.recall.policy import RecallPolicy, RecallSettings
from recall_lab.fake_servers.store.base import MessagesExpunged
from recall_lab.fake_servers.store.memory import MemoryStore

CORP = "corp.example"
USERS = ["alice@corp.example", "bob@corp.example", "carol@corp.example"]
ORIGINAL = "<original-1@corp.example>"


class Spawned:
    """`services.spawn` for these tests: the domain's background tasks, kept so that a test can await them and
    see what they raised (a cloud recall's report is filed by one, after the recall)."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task] = []

    def spawn(self, coro, name=None) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.append(task)
        return task

    async def wait(self) -> None:
        while self.tasks:
            await self.tasks.pop(0)


async def filed(services: DomainServices) -> None:
    """Until the domain's background work is done (raising what it raised)."""
    await services._tasks.wait()  # noqa: SLF001 - the test's own Spawned, passed in below


def make_services(settings=None, save_sent_copy=None, clock=None):
    store = MemoryStore()
    accounts = Accounts({u: u.split("@")[0] + "-password" for u in USERS})
    for user in USERS:
        store.ensure_user(user)
    sent(store)

    def deliver_local(user, raw, *, mail_from="", mailbox="INBOX"):
        return store.append(user, mailbox, f"Return-Path: <{mail_from}>\r\n".encode() + raw)

    def unused(*_a, **_k):
        raise AssertionError("not used by these tests")

    services = DomainServices(domain=CORP, role="organisation", store=store, accounts=accounts,
                              local_domains=[CORP], config=settings or {},
                              mail=SimpleNamespace(deliver_local=deliver_local, save_sent_copy=save_sent_copy or unused),
                              held_mail=SimpleNamespace(held=lambda: [], discard=unused),
                              submitter=SimpleNamespace(submit=unused, release=unused),
                              tasks=Spawned(), **({"clock": clock} if clock is not None else {}))
    return services, store


def original(sender="alice@corp.example", mid=ORIGINAL) -> bytes:
    return (f"From: {sender}\r\nTo: bob@corp.example\r\nSubject: Numbers\r\nMessage-ID: {mid}\r\n\r\n"
            "the numbers\r\n").encode()


def sent(store, sender="alice@corp.example", mid=ORIGINAL):
    """The sender's Sent copy: the proof that the original is hers."""
    store.append(sender, "Sent", original(sender, mid), flags=["\\Seen"])


def recall(sender="alice@corp.example", recipients=("bob@corp.example",), action=RecallAction.DELETE,
           replacement=None) -> EmailMessage:
    return build_recall_message(RecallInstruction(ORIGINAL, "Numbers", sender, "Alice", to=tuple(recipients),
                                                  action=action, replacement=replacement))


def delivery(msg: EmailMessage | bytes, *, channel="submission", auth_user="alice@corp.example",
             mail_from="alice@corp.example", recipients=("bob@corp.example",)) -> Delivery:
    raw = msg if isinstance(msg, bytes) else msg.as_bytes(policy=policy.SMTP)
    return Delivery(domain=CORP, channel=channel, auth_user=auth_user, mail_from=mail_from,
                    recipients=list(recipients), raw=raw, queue_id="q1")


def reports(store, user="alice@corp.example"):
    out = []
    for rec in store.messages(user, "INBOX"):
        raw = store.fetch_raw(user, "INBOX", rec.uid)
        rep = parse_report(raw)
        if rep is not None:
            assert verified_by(raw) == CORP
            out.append(rep)
    return out


async def test_cloud_recall_expunges_wherever_the_original_is_and_reports():
    services, store = make_services()
    policy_ = RecallPolicy({}, services)
    store.append("bob@corp.example", "INBOX", original())
    store.create_mailbox("carol@corp.example", "Archive")
    store.append("carol@corp.example", "Archive", original(), flags=["\\Seen"])
    events = []
    store.subscribe(events.append)
    d = delivery(recall(recipients=("bob@corp.example", "carol@corp.example", "dave@mail.example")),
                 recipients=("bob@corp.example", "carol@corp.example", "dave@mail.example"))
    verdict = await policy_.on_delivery(d, services)
    assert verdict is Verdict.CONTINUE and d.recipients == ["dave@mail.example"]  # only the external one
    assert store.find_by_message_id("bob@corp.example", ORIGINAL) == []
    assert store.find_by_message_id("carol@corp.example", ORIGINAL) == []
    assert [(e.user, e.mailbox) for e in events if isinstance(e, MessagesExpunged)] == [
        ("bob@corp.example", "INBOX"), ("carol@corp.example", "Archive")]
    await filed(services)
    [report] = reports(store)
    assert report.statuses == {"bob@corp.example": RecallStatus.RECALLED,
                               "carol@corp.example": RecallStatus.RECALLED_AFTER_READ,
                               "dave@mail.example": RecallStatus.EXTERNAL}
    # the report is a delivery of its own, filed after the recall was processed (and answered)
    assert [e["event"] for e in services.audit_log] == ["recall-report-scheduled", "recall-honoured",
                                                        "recall-report-filed"]


async def test_cloud_recall_to_local_only_is_consumed():
    services, store = make_services()
    store.append("bob@corp.example", "INBOX", original())
    d = delivery(recall())
    assert await RecallPolicy({}, services).on_delivery(d, services) is Verdict.CONSUMED


@pytest.mark.parametrize("mode", ["cloud", "legacy"])
async def test_a_consumed_recall_still_gets_its_sent_copy_like_any_submission(mode):
    """F12: the pipeline files the Sent copy only when delivery goes on; a consumed submission must file it
    itself, once (and only when the submission asked for one)."""
    filed: list[Delivery] = []
    services, store = make_services({"recall_mode": mode}, filed.append)
    store.append("bob@corp.example", "INBOX", original())
    # consumed: cloud removes bob's copy itself; legacy has no mailbox to hand the recall to (no such user)
    rcpts = ("bob@corp.example",) if mode == "cloud" else ("nobody@corp.example",)
    d = delivery(recall(recipients=rcpts), recipients=rcpts)
    d.save_sent_copy = True
    assert await RecallPolicy(services.config, services).on_delivery(d, services) is Verdict.CONSUMED
    assert filed == [d]
    # an internal recall (no Sent copy asked for) files none
    filed.clear()
    store.append("bob@corp.example", "INBOX", original())
    assert await RecallPolicy(services.config, services).on_delivery(
        delivery(recall(recipients=rcpts), recipients=rcpts), services) is Verdict.CONSUMED
    assert filed == []


async def test_a_recall_that_goes_on_leaves_the_sent_copy_to_the_pipeline():
    filed: list[Delivery] = []
    services, store = make_services(save_sent_copy=filed.append)
    d = delivery(recall(recipients=("bob@corp.example", "dave@mail.example")),
                 recipients=("bob@corp.example", "dave@mail.example"))
    d.save_sent_copy = True
    assert await RecallPolicy({}, services).on_delivery(d, services) is Verdict.CONTINUE
    assert filed == []  # final delivery files it, once


async def test_read_messages_stay_when_the_org_says_so_and_notify_delivers_the_recall():
    services, store = make_services({"recall_read_messages": False, "notify_recipients": True})
    store.append("bob@corp.example", "INBOX", original(), flags=["\\Seen"])
    d = delivery(recall())
    assert await RecallPolicy(services.config, services).on_delivery(d, services) is Verdict.CONTINUE
    assert d.recipients == ["bob@corp.example"]  # notify: the recall itself is delivered too
    assert len(store.find_by_message_id("bob@corp.example", ORIGINAL)) == 1
    await filed(services)
    assert reports(store)[0].statuses["bob@corp.example"] is RecallStatus.FAILED_READ


@pytest.mark.parametrize("kw, reason", [
    ({"channel": "mx", "auth_user": None}, "arrived via mx"),
    ({"auth_user": "carol@corp.example", "mail_from": "carol@corp.example"}, "From alice@corp.example is not"),
    ({"mail_from": "bob@corp.example"}, "envelope sender"),
    ({"channel": "submission", "auth_user": None}, "not authenticated"),
])
async def test_untrusted_recalls_are_ordinary_mail_and_logged(kw, reason):
    services, store = make_services()
    store.append("bob@corp.example", "INBOX", original())
    d = delivery(recall(), **kw)
    assert await RecallPolicy({}, services).on_delivery(d, services) is Verdict.CONTINUE
    assert d.recipients == ["bob@corp.example"] and "recall-honoured" not in d.trusted_marks
    assert len(store.find_by_message_id("bob@corp.example", ORIGINAL)) == 1
    await filed(services)
    assert reports(store) == []
    entry = services.audit_log[-1]
    assert entry["event"] == "recall-refused" and reason in entry["reason"]


async def test_a_message_id_alone_never_recalls_someone_elses_message():
    services, store = make_services()
    # alice reuses the Message-ID of carol's message to bob: only alice's own copy may go
    store.append("bob@corp.example", "INBOX", original(sender="carol@corp.example"))
    await RecallPolicy({}, services).on_delivery(delivery(recall()), services)
    assert len(store.find_by_message_id("bob@corp.example", ORIGINAL)) == 1
    await filed(services)
    assert reports(store)[0].statuses["bob@corp.example"] is RecallStatus.NOT_FOUND


async def test_a_recall_of_a_message_the_sender_never_sent_is_refused():
    services, store = make_services()
    store.append("bob@corp.example", "INBOX", original())
    # carol, properly authenticated as herself, recalls alice's message
    d = delivery(recall(sender="carol@corp.example"), auth_user="carol@corp.example", mail_from="carol@corp.example")
    assert await RecallPolicy({}, services).on_delivery(d, services) is Verdict.CONTINUE
    assert len(store.find_by_message_id("bob@corp.example", ORIGINAL)) == 1
    await filed(services)
    assert reports(store, "carol@corp.example") == []
    entry = services.audit_log[-1]
    assert entry["event"] == "recall-refused" and "sent by carol@corp.example" in entry["reason"]


async def test_forged_verified_marks_are_stripped_on_every_channel():
    services, store = make_services({"recall_mode": "legacy"})
    forged = recall()
    forged[HEADER_VERIFIED] = CORP
    d = delivery(forged, channel="mx", auth_user=None, mail_from="mallory@mail.example")
    await RecallPolicy(services.config, services).on_delivery(d, services)
    assert verified_by(d.raw) is None
    assert [e["event"] for e in services.audit_log] == ["recall-mark-stripped", "recall-refused"]


@pytest.mark.parametrize("mode", ["legacy", "classic"])
async def test_legacy_delivers_a_vouched_recall_to_held_mailboxes_too_and_reports_pending(mode):
    """A hold keeps what is deleted; it does not keep the classic recall from the held mailbox's clients."""
    services, store = make_services({"recall_mode": mode, "legal_hold": ["carol"]})
    store.append("bob@corp.example", "INBOX", original())
    rcpts = ("bob@corp.example", "carol@corp.example", "dave@mail.example")
    d = delivery(recall(recipients=rcpts), recipients=rcpts)
    assert await RecallPolicy(services.config, services).on_delivery(d, services) is Verdict.CONTINUE
    assert d.recipients == ["bob@corp.example", "carol@corp.example", "dave@mail.example"]
    assert verified_by(d.raw) == CORP
    assert len(store.find_by_message_id("bob@corp.example", ORIGINAL)) == 1  # the server deletes nothing
    await filed(services)
    [report] = reports(store)
    assert report.mode == "legacy"
    assert report.statuses == {"bob@corp.example": RecallStatus.PENDING,
                               "carol@corp.example": RecallStatus.PENDING,
                               "dave@mail.example": RecallStatus.EXTERNAL}
    assert "recoverable items" in report.results[1].detail


async def test_legacy_notices_are_vouched_only_from_the_recipient_itself():
    services, store = make_services({"recall_mode": "legacy"})
    policy_ = RecallPolicy(services.config, services)
    notice = build_notice(RecallNotice(ORIGINAL, "Numbers", "bob@corp.example", RecallStatus.RECALLED),
                          "alice@corp.example")
    good = delivery(notice, auth_user="bob@corp.example", mail_from="bob@corp.example",
                    recipients=("alice@corp.example",))
    await policy_.on_delivery(good, services)
    assert verified_by(good.raw) == CORP
    forged = delivery(notice, auth_user="carol@corp.example", mail_from="carol@corp.example",
                      recipients=("alice@corp.example",))
    await policy_.on_delivery(forged, services)
    assert verified_by(forged.raw) is None
    assert services.audit_log[-1]["event"] == "recall-notice-refused"


async def test_cloud_legal_hold_preserves_in_recoverable_items():
    services, store = make_services({"legal_hold": ["bob@corp.example"]})
    store.append("bob@corp.example", "INBOX", original())
    hold = LegalHoldPolicy(services.config, services)
    await hold.start(services)
    try:
        await RecallPolicy(services.config, services).on_delivery(delivery(recall()), services)
    finally:
        await hold.stop()
    assert store.find_by_message_id("bob@corp.example", ORIGINAL) == []
    [item] = services.recoverable.items("bob@corp.example")
    assert item.message_id == ORIGINAL and item.mailbox == "INBOX" and item.reason == "recall"
    assert b"the numbers" in item.raw
    await filed(services)
    assert reports(store)[0].statuses["bob@corp.example"] is RecallStatus.HELD
    # stopped: the area keeps what it has and no longer hears removals
    assert not services.recoverable.attached
    rec = store.append("carol@corp.example", "INBOX", original())
    store.expunge("carol@corp.example", "INBOX", [rec.uid])
    assert services.recoverable.items("carol@corp.example") == []


async def test_replace_delivers_the_replacement():
    services, store = make_services()
    store.append("bob@corp.example", "INBOX", original())
    new = EmailMessage()
    new["From"] = "alice@corp.example"
    new["Subject"] = "Numbers (corrected)"
    new.set_content("the right numbers\n")
    await RecallPolicy({}, services).on_delivery(delivery(recall(action=RecallAction.REPLACE, replacement=new)),
                                                 services)
    subjects = [str(BytesParser(policy=policy.default).parsebytes(
        store.fetch_raw("bob@corp.example", "INBOX", r.uid))["Subject"]) for r in store.messages(
        "bob@corp.example", "INBOX")]
    assert subjects == ["Numbers (corrected)"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="recall_mode"):
        RecallSettings.from_settings({"recall_mode": "psychic"}, CORP)
    with pytest.raises(ValueError, match="legal_hold"):
        RecallSettings.from_settings({"legal_hold": "bob"}, CORP)


async def test_retention_purges_trash_by_age_and_a_later_recall_finds_nothing():
    services, store = make_services({"purge_deleted_after": 60})
    now = [1000.0]
    retention = RetentionPolicy(services.config, services, clock=lambda: now[0])
    services.add_policies([retention])  # as the domain registers the policies it builds
    await retention.start(services)
    try:
        assert retention_for(services) is retention
        rec = store.append("bob@corp.example", "INBOX", original())
        store.move("bob@corp.example", "INBOX", [rec.uid], "Trash")
        now[0] += 59
        assert await retention.purge_now() == 0
        now[0] += 1
        assert await retention.purge_now() == 1
        assert store.messages("bob@corp.example", "Trash") == []
        await RecallPolicy({}, services).on_delivery(delivery(recall()), services)
        await filed(services)
        assert reports(store)[0].statuses["bob@corp.example"] is RecallStatus.NOT_FOUND
    finally:
        await retention.stop()


async def test_retention_background_task_purges_at_once_with_zero_age():
    services, store = make_services({"purge_deleted_after": 0})
    retention = RetentionPolicy(services.config, services)
    await retention.start(services)
    gone = asyncio.get_running_loop().create_future()
    store.subscribe(lambda e: isinstance(e, MessagesExpunged) and e.mailbox == "Trash" and not gone.done()
                    and gone.set_result(e))
    try:
        store.append("bob@corp.example", "Trash", original())
        event = await asyncio.wait_for(gone, timeout=5)
        assert event.user == "bob@corp.example"
    finally:
        await retention.stop()


async def test_retention_preserves_held_mailboxes():
    services, store = make_services({"purge_deleted_after": 0, "legal_hold": ["bob@corp.example"]})
    now = [0.0]
    LegalHoldPolicy(services.config, services)  # owns the recoverable-items area: attached when built
    retention = RetentionPolicy(services.config, services, clock=lambda: now[0])
    store.append("bob@corp.example", "Trash", original())  # already there at start
    await retention.start(services)
    try:
        assert await retention.purge_now() == 1
        assert [i.reason for i in services.recoverable.items("bob@corp.example")] == ["retention"]
    finally:
        await retention.stop()
