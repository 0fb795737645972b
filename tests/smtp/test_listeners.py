"""The submission and MX listeners over real sockets: who may send what, and the replies they get."""

from __future__ import annotations

import base64
import re
from email import message_from_bytes
from email import policy as email_policy

import aiosmtplib
import pytest

from tests.smtp.smtp_helpers import LineClient, imap_messages, imap_rows, message

ENHANCED = re.compile(r"^[45]\d\d[ -][45]\.\d+\.\d+ ")


async def test_submission_without_auth_is_refused_at_mail(lab):
    async with LineClient.session(lab.submission("corp.example")) as c:
        await c.ehlo()
        reply = await c.cmd("MAIL FROM:<alice@corp.example>")
        assert reply.startswith("530 5.7.0"), reply
        # RCPT without a MAIL is a sequence error; the session goes on
        assert (await c.cmd("RCPT TO:<bob@corp.example>")).startswith("503 5.5.1")
        assert (await c.cmd("NOOP")).startswith("250")


async def test_auth_plain_and_login_and_bad_password(lab):
    ep = lab.submission("corp.example")
    async with LineClient.session(ep) as c:
        ehlo = await c.ehlo()
        assert "AUTH LOGIN PLAIN" in ehlo
        assert "PIPELINING" in ehlo and "8BITMIME" in ehlo and "SMTPUTF8" in ehlo and "SIZE" in ehlo
        assert "ENHANCEDSTATUSCODES" in ehlo
        assert (await c.login("alice@corp.example", "wrong")).startswith("535 5.7.8")
        assert (await c.login("alice@corp.example", "alice-password")).startswith("235 2.7.0")
    async with LineClient.session(ep) as c:
        await c.ehlo()
        assert (await c.cmd("AUTH LOGIN")).startswith("334")
        assert (await c.cmd(base64.b64encode(b"bob@corp.example"))).startswith("334")
        assert (await c.cmd(base64.b64encode(b"bob-password"))).startswith("235")
        assert (await c.cmd("MAIL FROM:<bob@corp.example>")).startswith("250 2.1.0")


async def test_envelope_sender_must_be_the_authenticated_user(lab):
    async with LineClient.session(lab.submission("corp.example")) as c:
        await c.ehlo()
        await c.login("alice@corp.example", "alice-password")
        assert (await c.cmd("MAIL FROM:<bob@corp.example>")).startswith("553 5.7.1")
        assert (await c.cmd("MAIL FROM:<>")).startswith("553 5.7.1")
        assert (await c.cmd("MAIL FROM:<ALICE@corp.example>")).startswith("250")


async def test_from_header_must_be_the_authenticated_user(lab):
    async with LineClient.session(lab.submission("corp.example")) as c:
        await c.ehlo()
        await c.login("alice@corp.example", "alice-password")
        assert (await c.cmd("MAIL FROM:<alice@corp.example>")).startswith("250")
        assert (await c.cmd("RCPT TO:<bob@corp.example>")).startswith("250")
        reply = await c.data(message("Bob <bob@corp.example>", "bob@corp.example"))
        assert reply.startswith("553 5.7.1"), reply
    assert lab.store("corp.example").messages("bob@corp.example", "INBOX") == []


@pytest.mark.parametrize("listener", ["submission", "mx"])
async def test_unknown_local_user(lab, listener):
    ep = getattr(lab, listener)("corp.example")
    async with LineClient.session(ep) as c:
        await c.ehlo()
        if listener == "submission":
            await c.login("alice@corp.example", "alice-password")
            await c.cmd("MAIL FROM:<alice@corp.example>")
        else:
            await c.cmd("MAIL FROM:<dave@mail.example>")
        reply = await c.cmd("RCPT TO:<nobody@corp.example>")
        assert reply.startswith("550 5.1.1"), reply


async def test_mx_refuses_relaying_and_auth(lab):
    async with LineClient.session(lab.mx("corp.example")) as c:
        ehlo = await c.ehlo()
        assert "AUTH" not in ehlo
        assert (await c.cmd("AUTH PLAIN AGFsaWNlQGNvcnAuZXhhbXBsZQBhbGljZS1wYXNzd29yZA==")).startswith("502 5.5.1")
        # even with a local sender, the MX never relays to another domain
        assert (await c.cmd("MAIL FROM:<alice@corp.example>")).startswith("250")
        assert (await c.cmd("RCPT TO:<dave@mail.example>")).startswith("550 5.7.1")
        assert (await c.cmd("RCPT TO:<someone@elsewhere.example>")).startswith("550 5.7.1")
        assert (await c.cmd("RCPT TO:<bob@corp.example>")).startswith("250")


async def test_malformed_input_gets_enhanced_5xx_and_the_session_goes_on(lab):
    async with LineClient.session(lab.mx("corp.example")) as c:
        for line in ["FROBNICATE", "MAIL FROM:<dave@mail.example>"]:
            reply = await c.cmd(line)
            if line == "FROBNICATE":
                assert ENHANCED.match(reply), reply
            else:  # MAIL before EHLO
                assert reply.startswith("503 5.5.1"), reply
        await c.ehlo()
        for line in ["MAIL FROM:<not an address", "MAIL FROM:<@@>", "MAIL FROM:", "MAIL TO:<x@y.example>",
                     "MAIL FROM:<dave@mail.example> BODY=NONSENSE"]:
            reply = await c.cmd(line)
            assert reply[0] == "5" and ENHANCED.match(reply), (line, reply)
        assert (await c.cmd("MAIL FROM:<dave@mail.example>")).startswith("250")
        for line in ["RCPT TO:<bob@>", "RCPT TO:<bob>", "RCPT TO:", "RCPT TO:<bob@corp.example> FOO=BAR"]:
            reply = await c.cmd(line)
            assert reply[0] == "5" and ENHANCED.match(reply), (line, reply)
        assert (await c.cmd("DATA")).startswith("503 5.5.1")  # no valid recipient yet
        assert (await c.cmd("NOOP")).startswith("250")
        assert (await c.cmd("RCPT TO:<bob@corp.example>")).startswith("250")
        assert (await c.data(message("dave@mail.example", "bob@corp.example"))).startswith("250 2.0.0")


async def test_same_domain_delivery_read_back_over_imap(lab):
    raw = message("Alice <alice@corp.example>", "bob@corp.example", "lunch?",
                  extra="Message-ID: <lunch-1@corp.example>\r\n")
    await aiosmtplib.send(raw, sender="alice@corp.example", recipients=["bob@corp.example"],
                              **_submit_args(lab, "alice@corp.example"))
    [got] = await imap_messages(lab, "bob@corp.example")
    msg = message_from_bytes(got, policy=email_policy.default)
    assert msg["Message-ID"] == "<lunch-1@corp.example>"
    assert msg["Return-Path"] == "<alice@corp.example>"
    assert msg["Delivered-To"] == "bob@corp.example"
    assert "by corp.example" in msg["Received"] and "ESMTPA" in msg["Received"]
    assert msg["Subject"] == "lunch?"
    assert got.endswith(b"hi there\r\n")


async def test_message_id_and_date_added_when_missing(lab):
    raw = message("alice@corp.example", "bob@corp.example")
    assert b"Message-ID" not in raw
    await aiosmtplib.send(raw, sender="alice@corp.example", recipients=["bob@corp.example"],
                              **_submit_args(lab, "alice@corp.example"))
    [got] = await imap_messages(lab, "bob@corp.example")
    msg = message_from_bytes(got, policy=email_policy.default)
    assert msg["Message-ID"].endswith("@corp.example>")
    assert msg["Date"]
    [sent] = await imap_messages(lab, "alice@corp.example", "Sent")
    assert message_from_bytes(sent, policy=email_policy.default)["Message-ID"] == msg["Message-ID"]


async def test_cross_domain_delivery_and_sent_copy_with_bcc(lab):
    raw = message("alice@corp.example", "dave@mail.example", "plans",
                  extra="Cc: bob@corp.example\r\nBcc: erin@mail.example\r\nMessage-ID: <plans@corp.example>\r\n")
    await aiosmtplib.send(raw, sender="alice@corp.example", recipients=["dave@mail.example", "bob@corp.example", "erin@mail.example"], **_submit_args(lab, "alice@corp.example"))
    await lab.wait_idle()
    for user in ("dave@mail.example", "erin@mail.example", "bob@corp.example"):
        [got] = await imap_messages(lab, user)
        msg = message_from_bytes(got, policy=email_policy.default)
        assert msg["Message-ID"] == "<plans@corp.example>"
        assert msg["Bcc"] is None, f"{user} must not see the Bcc list"
        assert msg["Delivered-To"] == user
    dave = message_from_bytes((await imap_messages(lab, "dave@mail.example"))[0], policy=email_policy.default)
    assert len(dave.get_all("Received")) == 2  # corp's submission, then mail.example's MX
    [(sent, flags)] = await imap_rows(lab, "alice@corp.example", "Sent")
    assert b"\\Seen" in flags
    sent_msg = message_from_bytes(sent, policy=email_policy.default)
    assert sent_msg["Message-ID"] == "<plans@corp.example>"
    assert sent_msg["Bcc"] == "erin@mail.example"
    assert lab.store("corp.example").find_by_message_id("alice@corp.example", "<plans@corp.example>")


async def test_bcc_in_sent_copy_when_client_strips_the_header(lab):
    """Real clients (and aiosmtplib.send_message) drop Bcc before sending; the server still records it."""
    raw = message("alice@corp.example", "dave@mail.example", extra="Cc: carol@corp.example\r\n")
    await aiosmtplib.send(raw, sender="alice@corp.example", recipients=["dave@mail.example", "carol@corp.example", "bob@corp.example"], **_submit_args(lab, "alice@corp.example"))
    [sent] = await imap_messages(lab, "alice@corp.example", "Sent")
    assert message_from_bytes(sent, policy=email_policy.default)["Bcc"] == "bob@corp.example"
    [bob] = await imap_messages(lab, "bob@corp.example")
    assert b"Bcc" not in bob


async def test_size_limit(lab):
    limit = lab.config.domain("corp.example").max_message_size
    async with LineClient.session(lab.mx("corp.example")) as c:
        ehlo = await c.ehlo()
        assert f"SIZE {limit}" in ehlo
        reply = await c.cmd(f"MAIL FROM:<dave@mail.example> SIZE={limit + 1}")
        assert reply.startswith("552 5.3.4"), reply
        assert (await c.cmd("MAIL FROM:<dave@mail.example> SIZE=100")).startswith("250")
        assert (await c.cmd("RCPT TO:<bob@corp.example>")).startswith("250")
        big = message("dave@mail.example", "bob@corp.example", body=("x" * 998 + "\r\n") * (limit // 1000 + 2))
        reply = await c.data(big)
        assert reply.startswith("552 5.3.4"), reply
        assert (await c.cmd("NOOP")).startswith("250")
    assert lab.store("corp.example").messages("bob@corp.example", "INBOX") == []


async def test_8bit_message_arrives_byte_for_byte(lab):
    body = "Grüße aus Köln – 10 €\r\n"
    raw = ("From: alice@corp.example\r\nTo: dave@mail.example\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body).encode()
    async with LineClient.session(lab.submission("corp.example")) as c:
        await c.ehlo()
        await c.login("alice@corp.example", "alice-password")
        assert (await c.cmd("MAIL FROM:<alice@corp.example> BODY=8BITMIME")).startswith("250")
        assert (await c.cmd("RCPT TO:<dave@mail.example>")).startswith("250")
        assert (await c.data(raw)).startswith("250")
    await lab.wait_idle()
    [got] = await imap_messages(lab, "dave@mail.example")
    assert got.endswith(body.encode())
    assert message_from_bytes(got, policy=email_policy.default).get_content().strip() == body.strip()


async def test_smtputf8_message_with_utf8_headers_and_address(lab):
    lab.config.domain("mail.example")  # zoë is not a default user: use an internationalised header only
    raw = ("From: Zoë <alice@corp.example>\r\nTo: Dävé <dave@mail.example>\r\nSubject: Привет\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\nтекст\r\n").encode()
    async with LineClient.session(lab.submission("corp.example")) as c:
        await c.ehlo()
        await c.login("alice@corp.example", "alice-password")
        assert (await c.cmd("MAIL FROM:<alice@corp.example> SMTPUTF8 BODY=8BITMIME")).startswith("250")
        # an internationalised address is parsed (SMTPUTF8) and refused only because no such user exists
        assert (await c.cmd("RCPT TO:<jörg@corp.example>".encode())).startswith("550 5.1.1")
        assert (await c.cmd("RCPT TO:<dave@mail.example>")).startswith("250")
        assert (await c.data(raw)).startswith("250")
    await lab.wait_idle()
    [got] = await imap_messages(lab, "dave@mail.example")
    msg = message_from_bytes(got, policy=email_policy.default)
    assert msg["Subject"] == "Привет"
    assert "UTF8SMTPA" in msg.get_all("Received")[1]


async def test_pipelined_transactions(lab):
    async with LineClient.session(lab.mx("corp.example")) as c:
        await c.ehlo()
        c.writer.write(b"MAIL FROM:<dave@mail.example>\r\nRCPT TO:<bob@corp.example>\r\n"
                       b"RCPT TO:<carol@corp.example>\r\nDATA\r\n")
        replies = [await c.reply() for _ in range(4)]
        assert [r[:3] for r in replies] == ["250", "250", "250", "354"]
        c.writer.write(message("dave@mail.example", "bob@corp.example") + b".\r\n"
                       b"MAIL FROM:<dave@mail.example>\r\nRCPT TO:<bob@corp.example>\r\nDATA\r\n")
        replies = [await c.reply() for _ in range(4)]
        assert [r[:3] for r in replies] == ["250", "250", "250", "354"]
        c.writer.write(message("dave@mail.example", "bob@corp.example") + b".\r\n")
        assert (await c.reply()).startswith("250")
    assert len(lab.store("corp.example").messages("bob@corp.example", "INBOX")) == 2
    assert len(lab.store("corp.example").messages("carol@corp.example", "INBOX")) == 1


def _submit_args(lab, user: str) -> dict:
    domain = lab.domain_of(user)
    ep = lab.submission(domain)
    return {"hostname": ep.host, "port": ep.port, "username": user, "password": lab.password(user),
            "start_tls": False, "local_hostname": domain}


async def test_mx_takes_bounces_from_the_null_sender(lab):
    async with LineClient.session(lab.mx("corp.example")) as c:
        await c.ehlo()
        assert (await c.cmd("MAIL FROM:<>")).startswith("250")
        assert (await c.cmd("RCPT TO:<bob@corp.example>")).startswith("250")
        assert (await c.data(message("MAILER-DAEMON@mail.example", "bob@corp.example", "bounce"))).startswith("250")
    [got] = await imap_messages(lab, "bob@corp.example")
    assert got.startswith(b"Return-Path: <>\r\n")


async def test_client_vanishing_mid_data_delivers_nothing_and_after_data_at_most_once(lab):
    c = await LineClient.connect(lab.mx("corp.example"))
    await c.ehlo()
    await c.cmd("MAIL FROM:<dave@mail.example>")
    await c.cmd("RCPT TO:<bob@corp.example>")
    assert (await c.cmd("DATA")).startswith("354")
    c.writer.write(b"Subject: half\r\n\r\nonly half of it")
    await c.writer.drain()
    await c.close()
    c = await LineClient.connect(lab.mx("corp.example"))
    await c.ehlo()
    await c.cmd("MAIL FROM:<dave@mail.example>")
    await c.cmd("RCPT TO:<bob@corp.example>")
    assert (await c.cmd("DATA")).startswith("354")
    c.writer.write(message("dave@mail.example", "bob@corp.example", "whole") + b".\r\n")  # then gone at once
    await c.writer.drain()
    await c.close()
    c = await LineClient.connect(lab.mx("corp.example"))  # the server still serves
    assert (await c.ehlo()).startswith("250")
    await c.close()
    await lab.wait_idle()
    store = lab.store("corp.example")
    subjects = [store.fetch_raw("bob@corp.example", "INBOX", r.uid) for r in store.messages("bob@corp.example",
                                                                                           "INBOX")]
    assert len(subjects) <= 1 and all(b"Subject: whole" in s for s in subjects)
