"""A domain on a real Dovecot (`backend = "dovecot"`): the lab's SMTP side, policies and clients unchanged, the mail
in Dovecot, delivered over LMTP, acted on over IMAP as a master user (docs/dovecot-backend.md).

Each test goes through real sockets and reads Dovecot back the way a user's client would (imapclient), so what
it checks is Dovecot's state, not the lab's view of it.
"""

from __future__ import annotations

import asyncio
import socket
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import imapclient
import pytest

from recall_lab.fake_servers.policies.retention import retention_for
from recall_lab.fake_servers.store.base import MessageAppended, MessagesExpunged
from recall_lab.harness.backends import lmtp_available
from recall_lab.harness.config import ConfigError, DomainConfig, LabConfig, default_config, load_config
from recall_lab.harness.lab import Lab, LabStartError
from recall_lab.harness.recall_agent import RecallAgent

pytestmark = pytest.mark.skipif(not lmtp_available(),
                                reason="Dovecot with LMTP is not installed (apt-get install dovecot-imapd "
                                       "dovecot-lmtpd)")

CORP = "corp.example"
ALICE, BOB = "alice@corp.example", "bob@corp.example"


def _config(**policies) -> LabConfig:
    config = default_config()
    config.set_backends({CORP: "dovecot"})
    config.domain(CORP).policies.update(policies)
    return config


async def _send(lab: Lab, to: str = BOB, subject: str = "Quarterly numbers") -> str:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ALICE, to, subject
    msg["Message-ID"] = mid = make_msgid(domain=CORP)
    msg.set_content("The numbers, before they are final.\n")
    ep = lab.submission(CORP)
    await aiosmtplib.send(msg, hostname=ep.host, port=ep.port, username=ALICE, password=lab.password(ALICE),
                          start_tls=False, local_hostname="localhost")
    await lab.wait_idle()
    return mid


def _imap(lab: Lab, user: str) -> imapclient.IMAPClient:
    ep = lab.imap(CORP)
    client = imapclient.IMAPClient(ep.host, ep.port, ssl=False, timeout=10)
    client.login(user, lab.password(user))
    return client


def _greeting(lab: Lab) -> bytes:
    ep = lab.imap(CORP)
    with socket.create_connection((ep.host, ep.port), timeout=5) as sock:
        return sock.recv(200)


def _mids(lab: Lab, user: str, folder: str = "INBOX") -> list[str]:
    with _imap(lab, user) as client:
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        data = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
        return [v[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split(":", 1)[1].strip() for v in data.values()]


async def test_mail_is_delivered_into_dovecot_and_read_there():
    async with Lab(_config(), web=False) as lab:
        assert lab.backend(CORP) == "dovecot" and lab.backend("mail.example") == "lab"
        assert b"lab-ref ready" in await asyncio.to_thread(_greeting, lab)  # Dovecot's greeting, not ours
        assert lab.endpoints()["domains"][CORP]["backend"] == "dovecot"
        mid = await _send(lab)
        assert await asyncio.to_thread(_mids, lab, BOB) == [mid]
        assert mid in await asyncio.to_thread(_mids, lab, ALICE, "Sent")  # the Sent copy: an APPEND
        with await asyncio.to_thread(_imap, lab, BOB) as client:
            client.select_folder("INBOX", readonly=True)
            [uid] = client.search("ALL")
            raw = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
        # the lab's trace fields, written once: Dovecot adds no Received and no second Return-Path
        assert raw.count(b"Return-Path:") == 1 and raw.startswith(b"Return-Path: <alice@corp.example>\r\n")
        assert b"by vm with LMTP" not in raw and b"with LMTP" not in raw
        assert lab.store(CORP).find_by_message_id(BOB, mid)


async def test_cloud_recall_removes_the_original_from_dovecot_and_reports():
    async with Lab(_config(recall_mode="cloud"), web=False) as lab:
        mid = await _send(lab)
        handle = await RecallAgent(lab, ALICE, lab.password(ALICE)).recall(mid)
        report = await handle.report(timeout=20)
        assert report.statuses[BOB].value == "recalled"
        assert await asyncio.to_thread(_mids, lab, BOB) == []  # gone from Dovecot itself


async def test_a_clients_own_changes_reach_the_policies_through_the_store():
    """bob moves the message to Trash with his own client, over Dovecot's IMAP: the lab's store publishes it
    (the retention policy counts from then), and the retention purge then removes it from Dovecot."""
    now = [0.0]
    async with Lab(_config(purge_deleted_after=60), web=False, clock=lambda: now[0],
                   watch_backends=False) as lab:
        seen: list = []
        lab.store(CORP).subscribe(seen.append)
        mid = await _send(lab)

        def move() -> None:
            with _imap(lab, BOB) as client:
                client.select_folder("INBOX")
                client.move(client.search("ALL"), "Trash")

        await asyncio.to_thread(move)
        await lab.wait_idle()  # the store looks at Dovecot: bob's move is published now
        assert any(isinstance(e, MessageAppended) and e.mailbox == "Trash" and e.origin is None for e in seen)
        assert any(isinstance(e, MessagesExpunged) and e.mailbox == "INBOX" for e in seen)
        policy = retention_for(lab.services(CORP))
        now[0] += 59
        assert await policy.purge_now() == 0
        now[0] += 1
        assert await policy.purge_now() == 1
        assert await asyncio.to_thread(_mids, lab, BOB, "Trash") == []
        assert mid  # the original was the one moved


async def test_the_watcher_publishes_a_clients_change_without_being_asked():
    async with Lab(_config(), web=False) as lab:
        arrived = asyncio.Event()
        store = lab.store(CORP)
        store.subscribe(lambda e: arrived.set() if isinstance(e, MessageAppended) and e.mailbox == "Drafts"
                        else None)

        def append() -> None:
            with _imap(lab, BOB) as client:
                client.append("Drafts", b"Subject: draft\r\nMessage-ID: <d1@corp.example>\r\n\r\nx\r\n")

        await asyncio.to_thread(append)
        await asyncio.wait_for(arrived.wait(), 10)  # NOTIFY on the store's watcher connection, no read, no sync


async def test_a_client_deletion_is_kept_in_recoverable_items_through_lazy_expunge():
    async with Lab(_config(), web=False) as lab:
        mid = await _send(lab)

        def delete() -> None:
            with _imap(lab, BOB) as client:
                client.select_folder("INBOX")
                uids = client.search("ALL")
                client.delete_messages(uids)
                client.expunge()

        await asyncio.to_thread(delete)
        await lab.wait_idle()
        kept = [i for i in lab.services(CORP).recoverable.items(BOB) if i.message_id == mid]
        assert [(i.mailbox, i.reason) for i in kept] == [("INBOX", "client")]
        assert b"The numbers" in kept[0].raw  # read from Dovecot's lazy_expunge copy
        # Dovecot's own copy was taken: nothing piles up in its hidden namespace
        with await asyncio.to_thread(_imap, lab, BOB) as client:
            assert client.folder_status(".EXPUNGED/INBOX", ["MESSAGES"])[b"MESSAGES"] == 0


async def test_users_added_at_run_time_can_log_in_to_dovecot():
    async with Lab(_config(), web=False) as lab:
        lab.add_user("zoe@corp.example", "zoe-secret")
        mid = await _send(lab, to="zoe@corp.example")
        assert await asyncio.to_thread(_mids, lab, "zoe@corp.example") == [mid]


def test_backend_in_the_config_file_and_its_errors(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text('[domains."corp.example"]\nrole = "organisation"\nusers = ["alice"]\nbackend = "dovecot"\n')
    assert load_config(path).domain(CORP).backend == "dovecot"
    path.write_text('[domains."corp.example"]\nrole = "organisation"\nusers = ["alice"]\nbackend = "exchange"\n')
    with pytest.raises(ConfigError, match=r"backend must be one of 'lab', 'dovecot'"):
        load_config(path)
    with pytest.raises(ConfigError, match="no domain nope.example"):
        default_config().set_backends({"nope.example": "dovecot"})
    with pytest.raises(ConfigError):
        DomainConfig(name=CORP, backend="exchange")


async def test_tls_without_the_certificate_files_is_refused_before_anything_listens():
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with pytest.raises(LabStartError, match="certificate's files"):
        async with Lab(_config(), tls=context, web=False):
            pass
