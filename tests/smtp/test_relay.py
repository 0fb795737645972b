"""The relay queue over real sockets: cross-domain delivery, retries on 4xx, DSNs on 5xx and on giving up."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import message_from_bytes
from email import policy as email_policy

import aiosmtplib
import pytest

from tests.smtp.smtp_helpers import ScriptedServer, imap_messages, message


def _args(lab, user):
    domain = lab.domain_of(user)
    ep = lab.submission(domain)
    return {"hostname": ep.host, "port": ep.port, "username": user, "password": lab.password(user),
            "start_tls": False, "local_hostname": domain}


@asynccontextmanager
async def _partner_sent_to(lab, **script) -> AsyncIterator[ScriptedServer]:
    """A ScriptedServer for partner.example, routed to by the lab, after alice's message to pat there has been
    relayed (or given up on): the test reads what the partner saw and what came back to alice."""
    partner = ScriptedServer(**script)
    await partner.start()
    try:
        lab.set_route("partner.example", "127.0.0.1", partner.port)
        await _send_to_pat(lab)
        await lab.wait_idle()
        yield partner
    finally:
        await partner.stop()


async def _send_to_pat(lab) -> None:
    await aiosmtplib.send(message("alice@corp.example", "pat@partner.example"), sender="alice@corp.example",
                          recipients=["pat@partner.example"], **_args(lab, "alice@corp.example"))


def _dsn_parts(raw: bytes):
    msg = message_from_bytes(raw, policy=email_policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    human, status, original = list(msg.iter_parts())
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    return msg, human, blocks, original


async def test_dsn_when_the_other_domain_refuses_a_recipient(lab):
    raw = message("alice@corp.example", "ghost@mail.example", "to nobody",
                  extra="Message-ID: <ghost@corp.example>\r\n")
    await aiosmtplib.send(raw, sender="alice@corp.example", recipients=["ghost@mail.example", "dave@mail.example"],
                          **_args(lab, "alice@corp.example"))
    await lab.wait_idle()
    assert len(await imap_messages(lab, "dave@mail.example")) == 1
    [bounce] = await imap_messages(lab, "alice@corp.example")
    msg, human, blocks, original = _dsn_parts(bounce)
    assert msg["From"].addresses[0].username == "MAILER-DAEMON"
    assert msg["Return-Path"] == "<>"
    assert blocks[0]["Reporting-MTA"] == "dns; corp.example"
    [rcpt] = blocks[1:]
    assert rcpt["Final-Recipient"] == "rfc822; ghost@mail.example"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert "550 5.1.1" in rcpt["Diagnostic-Code"]
    assert "<ghost@corp.example>" in original.get_content()
    assert any(e["event"] == "dsn" for e in lab.audit_log("corp.example"))


async def test_dsn_when_no_route(lab):
    await aiosmtplib.send(message("alice@corp.example", "x@nowhere.example"), sender="alice@corp.example",
                          recipients=["x@nowhere.example"], **_args(lab, "alice@corp.example"))
    await lab.wait_idle()
    [bounce] = await imap_messages(lab, "alice@corp.example")
    _, _, blocks, _ = _dsn_parts(bounce)
    assert blocks[1]["Status"] == "5.4.4"


async def test_retry_after_temporary_failure_delivers_once(lab):
    async with _partner_sent_to(lab, data_replies=["451 4.3.0 try later", "452 4.3.1 still busy"]) as partner:
        assert partner.attempts == 3
        [(mail_from, rcpts, raw)] = partner.received
        assert (mail_from, rcpts) == ("alice@corp.example", ["pat@partner.example"])
        assert await imap_messages(lab, "alice@corp.example") == []  # no bounce
        assert lab.relay_pending("corp.example") == []


async def test_dsn_when_retries_run_out(lab):
    async with _partner_sent_to(lab, data_replies=["451 4.3.0 busy"] * 10) as partner:
        assert partner.attempts == 1 + len(lab.config.retry_delays)
        [bounce] = await imap_messages(lab, "alice@corp.example")
        _, human, blocks, _ = _dsn_parts(bounce)
        assert blocks[1]["Status"] == "4.3.0"
        assert blocks[1]["Action"] == "failed"
        assert "retrying" in human.get_content()


async def test_retry_when_the_other_server_is_down_then_up(lab):
    partner = ScriptedServer()
    await partner.start()
    port = partner.port
    await partner.stop()  # nobody listens there now: connection refused is a temporary failure
    lab.set_route("partner.example", "127.0.0.1", port)
    lab.pause_relay("corp.example")
    await _send_to_pat(lab)
    [entry] = lab.relay_pending("corp.example")
    assert entry.recipients == ["pat@partner.example"]
    partner2 = ScriptedServer()
    await partner2.start()
    try:
        lab.set_route("partner.example", "127.0.0.1", partner2.port)
        lab.resume_relay("corp.example")
        await lab.wait_idle()
        assert len(partner2.received) == 1
    finally:
        await partner2.stop()


async def test_dsn_when_the_other_server_stays_down(lab):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: connections are refused
    lab.set_route("partner.example", "127.0.0.1", dead)
    await _send_to_pat(lab)
    await lab.wait_idle()
    [bounce] = await imap_messages(lab, "alice@corp.example")
    _, _, blocks, _ = _dsn_parts(bounce)
    assert blocks[1]["Status"] == "4.4.1" and blocks[1]["Action"] == "failed"


def _server_tls() -> ssl.SSLContext:
    trustme = pytest.importorskip("trustme")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


async def test_relay_uses_starttls_when_the_next_hop_offers_it(lab):
    async with _partner_sent_to(lab, tls=_server_tls()) as partner:
        assert partner.received_over_tls == [True]


async def test_relay_sends_in_plain_text_at_once_when_starttls_is_refused(lab):
    """A hop that offers STARTTLS and then answers 454 still gets the mail, on the first attempt: retrying
    later would meet the same refusal."""
    async with _partner_sent_to(lab, tls=_server_tls(),
                                starttls_reply="454 4.7.0 TLS not available due to local problem") as partner:
        assert partner.starttls_refused == 1
        assert partner.attempts == 1 and partner.received_over_tls == [False]
        assert await imap_messages(lab, "alice@corp.example") == []  # no bounce


async def test_relay_sends_in_plain_text_when_the_tls_handshake_fails(lab):
    """A hop that offers STARTTLS but cannot complete a handshake (here: no certificate at all)."""
    broken = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # no certificate loaded
    async with _partner_sent_to(lab, tls=broken) as partner:
        assert partner.attempts == 1 and partner.received_over_tls == [False]
        assert await imap_messages(lab, "alice@corp.example") == []  # no bounce


async def test_relay_falls_back_to_helo_for_a_server_without_esmtp(lab):
    async with _partner_sent_to(lab, esmtp=False) as partner:
        assert partner.attempts == 1 and len(partner.received) == 1
