"""Recoverable items and the cloud-recall settings as Exchange Online documents them, over the real servers.

Every removal from an organisation mailbox (the user's own client expunging, a recall, a retention purge) is kept
out of the user's view for the deleted item retention period, then purged by the domain's clock; a held mailbox
keeps its items. Messages go in over SMTP submission, clients act over IMAP (imapclient), the report is read
from alice's INBOX; time is the lab's clock, advanced by the test.
"""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from recall_lab.fake_servers.policies.legal_hold import recoverable_for
from recall_lab.fake_servers.recall.format import RecallStatus
from recall_lab.harness.lab import LabStartError
from recall_lab.harness.recall_agent import RecallAgent

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    CORP,
    DAVE,
    EXT,
    TIMEOUT,
    IdleWatcher,
    locations,
    open_message,
    password,
    recall_lab,
    reports_in_inbox,
    send,
    server_state,
    with_imap,
)

S = RecallStatus
DAY = 86400.0


async def recall(lab, mid, **kw):
    handle = await RecallAgent(lab, ALICE, password(ALICE)).recall(mid, **kw)
    return await handle.report(timeout=TIMEOUT)


async def client_deletes(lab, user: str, mid: str, uid_expunge: bool = False) -> None:
    """What a mail program does: STORE +FLAGS \\Deleted, then EXPUNGE (or UID EXPUNGE of that UID)."""

    def work(c) -> None:
        c.select_folder("INBOX")
        uids = c.search(["HEADER", "Message-ID", mid])
        assert uids, f"{mid} not in {user}'s INBOX"
        c.add_flags(uids, [b"\\Deleted"])
        c.uid_expunge(uids) if uid_expunge else c.expunge()

    await with_imap(lab, user, work)


async def fetch_raw(lab, user: str, mid: str) -> bytes:
    def work(c) -> bytes:
        c.select_folder("INBOX", readonly=True)
        [uid] = c.search(["HEADER", "Message-ID", mid])
        return c.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]

    return await with_imap(lab, user, work)


# --- every removal is kept; the user never sees it ------------------------------------------------------------


@pytest.mark.parametrize("uid_expunge", [False, True], ids=["EXPUNGE", "UID-EXPUNGE"])
@pytest.mark.parametrize("store", ["memory", "maildir"])
async def test_a_clients_own_expunge_lands_in_recoverable_items(store, uid_expunge, tmp_path):
    spec = "memory" if store == "memory" else f"maildir:{tmp_path}"
    async with recall_lab("cloud", store=spec) as lab:
        mid = await send(lab, ALICE, to=[BOB])
        raw = await fetch_raw(lab, BOB, mid)
        async with IdleWatcher(lab, BOB) as idle:
            await client_deletes(lab, BOB, mid, uid_expunge)
            await idle.wait_kind(b"EXPUNGE")
        assert await locations(lab, BOB, mid) == []  # gone from every folder an IMAP client can list
        [item] = lab.services(CORP).recoverable.items(BOB)
        assert (item.message_id, item.mailbox, item.reason) == (mid, "INBOX", "client")
        assert item.raw == raw and "\\Deleted" in item.flags
        assert "Recoverable Items" not in [c.folder for c in await server_state(lab, BOB)]


async def test_kept_items_are_purged_after_the_retention_period_by_the_domains_clock():
    now = [0.0]
    async with recall_lab("cloud", clock=lambda: now[0], deleted_item_retention_days=3) as lab:
        area = lab.services(CORP).recoverable
        policy = recoverable_for(lab.services(CORP))
        assert policy is not None
        mid = await send(lab, ALICE, to=[BOB])
        await client_deletes(lab, BOB, mid)
        assert [i.message_id for i in area.items(BOB)] == [mid]
        now[0] += 3 * DAY - 1
        assert await policy.purge_now() == 0 and len(area.items(BOB)) == 1
        now[0] += 1
        assert await policy.purge_now() == 1
        assert area.items(BOB) == [] and area.size(BOB) == 0
        assert [e["event"] for e in lab.audit_log(CORP)][-1] == "recoverable-purge"


async def test_the_default_retention_is_14_days():
    now = [0.0]
    async with recall_lab("cloud", clock=lambda: now[0]) as lab:
        policy = recoverable_for(lab.services(CORP))
        mid = await send(lab, ALICE, to=[BOB])
        await client_deletes(lab, BOB, mid)
        now[0] += 14 * DAY - 1
        assert await policy.purge_now() == 0
        now[0] += 1
        assert await policy.purge_now() == 1


async def test_a_held_mailbox_keeps_its_items_beyond_the_retention_period():
    now = [0.0]
    async with recall_lab("cloud", clock=lambda: now[0], legal_hold=[BOB]) as lab:
        area = lab.services(CORP).recoverable
        policy = recoverable_for(lab.services(CORP))
        mid = await send(lab, ALICE, to=[BOB, CAROL])
        await client_deletes(lab, BOB, mid)
        await client_deletes(lab, CAROL, mid)
        now[0] += 365 * DAY
        assert await policy.purge_now() == 1  # carol's; bob's is held
        assert [i.message_id for i in area.items(BOB)] == [mid] and area.items(CAROL) == []


async def test_without_single_item_recovery_only_held_mailboxes_keep_removals():
    async with recall_lab("cloud", single_item_recovery=False, legal_hold=[CAROL]) as lab:
        area = lab.services(CORP).recoverable
        mid = await send(lab, ALICE, to=[BOB, CAROL])
        await client_deletes(lab, BOB, mid)
        await client_deletes(lab, CAROL, mid)
        assert area.items(BOB) == []
        assert [i.message_id for i in area.items(CAROL)] == [mid]


async def test_the_quota_drops_the_oldest_items_of_a_mailbox_not_on_hold():
    async with recall_lab("cloud", recoverable_items_quota=10_000, legal_hold=[CAROL]) as lab:
        area = lab.services(CORP).recoverable
        body = ("x" * 79 + "\n") * 45  # about 4 kB a message: two fit under the cap, three do not
        mids = [await send(lab, ALICE, to=[BOB, CAROL], subject=f"n{n}", body=body) for n in range(3)]
        for mid in mids:
            await client_deletes(lab, BOB, mid)
            await client_deletes(lab, CAROL, mid)
        kept = [i.message_id for i in area.items(BOB)]
        assert all(3600 < i.size < 5000 for i in area.items(CAROL))
        assert kept == mids[1:] and area.size(BOB) <= 10_000  # the oldest went first
        assert [i.message_id for i in area.items(CAROL)] == mids  # a hold outranks the cap
        assert any(e["event"] == "recoverable-quota" and e["user"] == BOB for e in lab.audit_log(CORP))


@pytest.mark.parametrize("setting, value", [("deleted_item_retention_days", 31), ("deleted_item_retention_days", 0),
                                            ("single_item_recovery", "yes"), ("recoverable_items_quota", -1),
                                            ("notify_recipients", "unread"), ("recall_max_age_days", 0),
                                            ("recall_mode", "psychic")])
async def test_bad_settings_stop_the_lab_with_a_clear_message(setting, value):
    with pytest.raises(LabStartError, match=setting):
        async with recall_lab("cloud", **{setting: value}):
            pass


# --- cloud recall settings ------------------------------------------------------------------------------------


async def test_a_cloud_recall_is_kept_in_recoverable_items_and_purged_like_any_removal():
    now = [0.0]
    async with recall_lab("cloud", clock=lambda: now[0], legal_hold=[CAROL]) as lab:
        area = lab.services(CORP).recoverable
        mid = await send(lab, ALICE, to=[BOB, CAROL])
        report = await recall(lab, mid)
        assert report.statuses == {BOB: S.RECALLED, CAROL: S.HELD}
        assert [(i.message_id, i.reason) for i in area.items(BOB)] == [(mid, "recall")]
        assert [(i.message_id, i.reason) for i in area.items(CAROL)] == [(mid, "recall")]
        now[0] += 14 * DAY
        assert await recoverable_for(lab.services(CORP)).purge_now() == 1
        assert area.items(BOB) == [] and len(area.items(CAROL)) == 1


async def test_a_recall_of_an_original_older_than_the_max_age_fails_too_old():
    now = [0.0]
    async with recall_lab("cloud", clock=lambda: now[0], recall_max_age_days=2) as lab:
        young = await send(lab, ALICE, to=[BOB], subject="young")
        old = await send(lab, ALICE, to=[BOB], subject="old")
        now[0] += 2 * DAY - 60
        assert (await recall(lab, young)).statuses == {BOB: S.RECALLED}
        now[0] += 120  # now past two days since alice's server accepted it
        report = await recall(lab, old)
        assert report.statuses == {BOB: S.FAILED_TOO_OLD}
        assert "older than the 2 days" in report.results[0].detail
        assert await locations(lab, BOB, old) == ["INBOX"]  # nothing removed


async def test_the_default_max_age_is_30_days():
    now = [0.0]
    async with recall_lab("cloud", clock=lambda: now[0]) as lab:
        mid = await send(lab, ALICE, to=[BOB])
        now[0] += 30 * DAY + 60
        assert (await recall(lab, mid)).statuses == {BOB: S.FAILED_TOO_OLD}


def _recalls_in(state, mid):
    return [c for c in state if c.folder == "INBOX" and c.headers.get("X-Recall-Message-ID") == mid]


@pytest.mark.parametrize("notify, alerted", [(False, set()), (True, {BOB, CAROL}), ("read", {BOB})],
                         ids=["off", "all", "read-only"])
async def test_notify_recipients_alerts_everyone_or_only_those_who_had_read_it(notify, alerted):
    async with recall_lab("cloud", notify_recipients=notify) as lab:
        mid = await send(lab, ALICE, to=[BOB, CAROL])
        await open_message(lab, BOB, mid)  # bob read it, carol did not
        report = await recall(lab, mid)
        assert report.statuses == {BOB: S.RECALLED_AFTER_READ, CAROL: S.RECALLED}
        got = {user for user in (BOB, CAROL) if _recalls_in(await server_state(lab, user), mid)}
        assert got == alerted
        assert await locations(lab, BOB, mid) == [] and await locations(lab, CAROL, mid) == []


async def test_replace_sends_the_replacement_to_external_recipients_as_ordinary_mail():
    async with recall_lab("cloud") as lab:
        mid = await send(lab, ALICE, to=[BOB, DAVE])
        replacement = EmailMessage()
        replacement["From"] = f"Alice <{ALICE}>"
        replacement["To"] = f"{BOB}, {DAVE}"
        replacement["Subject"] = "Quarterly numbers (final)"
        replacement["Message-ID"] = "<final-numbers@corp.example>"
        replacement.set_content("The final numbers.\n")
        async with IdleWatcher(lab, DAVE) as dave_idle:
            report = await recall(lab, mid, action="replace", replacement=replacement)
            await lab.wait_idle()  # the relay to mail.example finished
            await dave_idle.wait_for(lambda _p: dave_idle.kinds().count(b"EXISTS") >= 2)
        assert report.statuses == {BOB: S.RECALLED, DAVE: S.EXTERNAL}
        dave = await server_state(lab, DAVE)
        assert mid in [c.message_id for c in dave]  # another provider: the original stays
        [new] = [c for c in dave if c.message_id == "<final-numbers@corp.example>"]
        assert str(new.headers["Subject"]) == "Quarterly numbers (final)"
        assert new.headers.get("X-Recall-Message-ID") is None  # a separate, ordinary message
        assert _recalls_in(dave, mid)  # and the recall itself arrived as ordinary mail
        assert [c.message_id for c in await server_state(lab, BOB) if c.folder == "INBOX"] == [
            "<final-numbers@corp.example>"]
        assert len(await reports_in_inbox(lab, ALICE)) == 1  # one report per recall
        assert EXT in lab.domains


async def test_classic_is_the_name_of_the_legacy_mode():
    async with recall_lab("classic") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        report = await recall(lab, mid)
        assert report.mode == "legacy" and report.statuses == {BOB: S.PENDING}
        assert await locations(lab, BOB, mid) == ["INBOX"]  # the server deletes nothing; the client will
