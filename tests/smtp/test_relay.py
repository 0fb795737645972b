"""The relay queue over real sockets: cross-domain delivery, retries on 4xx, DSNs on 5xx and on giving up."""

from __future__ import annotations

from email import message_from_bytes
from email import policy as email_policy

import aiosmtplib

from tests.smtp.smtp_helpers import ScriptedServer, imap_messages, message


def _args(lab, user):
    ep = lab.submission(lab.domain_of(user))
    return {"hostname": ep.host, "port": ep.port, "username": user, "password": lab.password(user),
            "start_tls": False}


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
    partner = ScriptedServer(data_replies=["451 4.3.0 try later", "452 4.3.1 still busy"])
    await partner.start()
    try:
        lab.set_route("partner.example", "127.0.0.1", partner.port)
        await aiosmtplib.send(message("alice@corp.example", "pat@partner.example"), sender="alice@corp.example",
                              recipients=["pat@partner.example"], **_args(lab, "alice@corp.example"))
        await lab.wait_idle()
        assert partner.attempts == 3
        [(mail_from, rcpts, raw)] = partner.received
        assert (mail_from, rcpts) == ("alice@corp.example", ["pat@partner.example"])
        assert await imap_messages(lab, "alice@corp.example") == []  # no bounce
        assert lab.relay_pending("corp.example") == []
    finally:
        await partner.stop()


async def test_dsn_when_retries_run_out(lab):
    partner = ScriptedServer(data_replies=["451 4.3.0 busy"] * 10)
    await partner.start()
    try:
        lab.set_route("partner.example", "127.0.0.1", partner.port)
        await aiosmtplib.send(message("alice@corp.example", "pat@partner.example"), sender="alice@corp.example",
                              recipients=["pat@partner.example"], **_args(lab, "alice@corp.example"))
        await lab.wait_idle()
        assert partner.attempts == 1 + len(lab.config.retry_delays)
        [bounce] = await imap_messages(lab, "alice@corp.example")
        _, human, blocks, _ = _dsn_parts(bounce)
        assert blocks[1]["Status"] == "4.3.0"
        assert blocks[1]["Action"] == "failed"
        assert "retrying" in human.get_content()
    finally:
        await partner.stop()


async def test_retry_when_the_other_server_is_down_then_up(lab):
    partner = ScriptedServer()
    await partner.start()
    port = partner.port
    await partner.stop()  # nobody listens there now: connection refused is a temporary failure
    lab.set_route("partner.example", "127.0.0.1", port)
    lab.pause_relay("corp.example")
    await aiosmtplib.send(message("alice@corp.example", "pat@partner.example"), sender="alice@corp.example",
                          recipients=["pat@partner.example"], **_args(lab, "alice@corp.example"))
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
    await aiosmtplib.send(message("alice@corp.example", "pat@partner.example"), sender="alice@corp.example",
                          recipients=["pat@partner.example"], **_args(lab, "alice@corp.example"))
    await lab.wait_idle()
    [bounce] = await imap_messages(lab, "alice@corp.example")
    _, _, blocks, _ = _dsn_parts(bounce)
    assert blocks[1]["Status"] == "4.4.1" and blocks[1]["Action"] == "failed"
