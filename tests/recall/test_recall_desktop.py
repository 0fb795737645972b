"""Legacy recall carried out by the real desktop client emulator (recall_lab.harness.clients.DesktopClient).

The server-side rows are in test_recall_legacy.py; here bob runs the cached desktop client with recall
processing on, and alice's agent reads the report the client's notice completes.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import aiosmtplib
import pytest

from recall_lab.fake_servers.recall.format import RecallInstruction, RecallStatus, build_recall_message
from recall_lab.harness.recall_agent import RecallAgent

from .conftest import (
    ALICE,
    BOB,
    CORP,
    DAVE,
    TIMEOUT,
    IdleWatcher,
    locations,
    move_message,
    password,
    recall_lab,
    send,
)

desktop_module = pytest.importorskip("recall_lab.harness.clients.desktop")
S = RecallStatus


@asynccontextmanager
async def bob_with_an_original(lab):
    """Bob's desktop client running, with alice's original arrived in its cache; yields (client, Message-ID)."""
    client = desktop_module.DesktopClient(BOB, password(BOB), lab.imap(CORP), submission=lab.submission(CORP),
                                          process_recalls_on_arrival=True, timeout=TIMEOUT)
    async with client:
        mid = await send(lab, ALICE, to=[BOB])
        await client.wait_for_message(mid, timeout=TIMEOUT)
        yield client, mid


async def recall_and_wait(lab, mid):
    handle = await RecallAgent(lab, ALICE, password(ALICE)).recall(mid)
    return await handle.report(timeout=TIMEOUT, until_complete=True)


async def test_unread_is_deleted_by_the_client_and_the_report_completes():
    async with recall_lab("legacy") as lab:
        async with bob_with_an_original(lab) as (desktop, mid), IdleWatcher(lab, BOB) as idle:
            report = await recall_and_wait(lab, mid)
            await idle.wait_kind(b"EXPUNGE")
            assert report.statuses == {BOB: S.RECALLED}
            assert not desktop.has_message_id(mid)
        assert await locations(lab, BOB, mid) == []


async def test_read_fails_and_both_stay():
    async with recall_lab("legacy") as lab:
        async with bob_with_an_original(lab) as (desktop, mid):
            await desktop.open(mid)
            report = await recall_and_wait(lab, mid)
            assert report.statuses == {BOB: S.FAILED_READ}
            assert desktop.has_message_id(mid)
        assert await locations(lab, BOB, mid) == ["INBOX"]


async def test_moved_by_a_rule_fails_moved():
    async with recall_lab("legacy") as lab:
        async with bob_with_an_original(lab) as (_desktop, mid):
            await move_message(lab, BOB, mid, "Projects")
            report = await recall_and_wait(lab, mid)
            assert report.statuses == {BOB: S.FAILED_MOVED}
        assert await locations(lab, BOB, mid) == ["Projects"]


async def test_a_recall_forged_via_mx_is_not_obeyed_by_the_client():
    async with recall_lab("legacy") as lab:
        async with bob_with_an_original(lab) as (desktop, mid):
            forged = build_recall_message(RecallInstruction(mid, "Quarterly numbers", ALICE, "Alice", to=(BOB,)))
            mx = lab.mx(CORP)
            await aiosmtplib.send(forged, sender=DAVE, recipients=[BOB], hostname=mx.host, port=mx.port,
                                  start_tls=False, timeout=TIMEOUT, local_hostname="mail.example")
            await lab.wait_idle()
            await desktop.settle()
        assert await locations(lab, BOB, mid) == ["INBOX"]
