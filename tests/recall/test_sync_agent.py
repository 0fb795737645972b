"""The synchronous recall agent (for imapclient users and scripts) against a BlockingLab."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest
from imapclient import IMAPClient

from recall_lab.fake_servers.recall.format import RecallStatus
from recall_lab.harness.lab import BlockingLab
from recall_lab.harness.recall_agent import RecallAgentError, SyncRecallAgent

from .conftest import ALICE, BOB, CORP, DAVE, TIMEOUT, lab_config, password


def test_sync_agent_recalls_and_reads_the_report():
    with BlockingLab(lab_config("cloud")) as lab:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = ALICE, f"{BOB}, {DAVE}", "Numbers"
        msg.set_content("numbers\n")
        sub = lab.submission(CORP)
        with smtplib.SMTP(sub.host, sub.port, timeout=TIMEOUT, local_hostname=CORP) as smtp:
            smtp.login(ALICE, password(ALICE))
            smtp.send_message(msg)
        lab.wait_idle()
        ep = lab.imap(CORP)
        with IMAPClient(ep.host, ep.port, ssl=False, timeout=TIMEOUT) as client:
            client.login(ALICE, password(ALICE))
            client.select_folder("Sent", readonly=True)
            [uid] = client.search(["ALL"])
            header = client.fetch([uid], ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])[uid]
            mid = next(v for k, v in header.items() if k.startswith(b"BODY")).decode().split(":", 1)[1].strip()

        agent = SyncRecallAgent(lab, ALICE, password(ALICE))
        report = agent.recall(mid).report(timeout=TIMEOUT)
        assert report.statuses == {BOB: RecallStatus.RECALLED, DAVE: RecallStatus.EXTERNAL}
        with IMAPClient(ep.host, ep.port, ssl=False, timeout=TIMEOUT) as client:
            client.login(BOB, password(BOB))
            client.select_folder("INBOX", readonly=True)
            assert client.search(["HEADER", "Message-ID", mid]) == []
        with pytest.raises(RecallAgentError, match="no message"):
            agent.recall("<unknown@corp.example>")


def test_sync_agent_over_starttls():
    """A lab with TLS takes submission AUTH only after STARTTLS: the agent upgrades IMAP and SMTP first."""
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with BlockingLab(lab_config("cloud"), tls=server_ctx) as lab:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = ALICE, BOB, "Over TLS"
        msg["Message-ID"] = "<tls-1@corp.example>"
        msg.set_content("numbers\n")
        sub = lab.submission(CORP)
        with smtplib.SMTP(sub.host, sub.port, timeout=TIMEOUT, local_hostname=CORP) as smtp:
            smtp.starttls(context=client_ctx)
            smtp.login(ALICE, password(ALICE))
            smtp.send_message(msg)
        lab.wait_idle()
        with pytest.raises(RecallAgentError, match="only after STARTTLS"):
            SyncRecallAgent(lab, ALICE, password(ALICE)).recall("<tls-1@corp.example>")  # plain text: refused
        report = SyncRecallAgent(lab, ALICE, password(ALICE), tls=client_ctx).recall("<tls-1@corp.example>"
                                                                                    ).report(timeout=TIMEOUT)
        assert report.statuses == {BOB: RecallStatus.RECALLED}
