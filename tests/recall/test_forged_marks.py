"""Forged marks of trust, end to end: hostile bytes sent over real sockets to corp.example's MX (no login) or its
submission port, while bob's legacy desktop client (recall_lab.harness.clients.DesktopClient, recalls processed on arrival)
holds alice's original. Whatever the bytes, alice's original must stay, bob's client must not act, and alice must
get no "Recall Success".

Each probe hides the server-only X-Recall-Verified mark somewhere the old filter did not look but Python's email
parser (what clients and the trust code read with) does: behind a bare CR, in the EHLO argument (it lands in
Received), in a quoted MAIL FROM local part (it lands in Return-Path), in an RCPT argument. The server refuses the
non-canonical input at the SMTP edge with a 5xx and an enhanced code; marks written in well-formed header fields
(folded, in a message/rfc822 part) are stripped or ignored.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from email.message import EmailMessage

import aiosmtplib
import pytest

from recall_lab.fake_servers.recall.format import RecallAction, RecallInstruction, build_recall_message
from recall_lab.harness.lab import Endpoint, Lab
from tests.smtp.smtp_helpers import LineClient

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    CORP,
    TIMEOUT,
    locations,
    password,
    recall_lab,
    send,
    server_state,
    with_imap,
)

desktop_module = pytest.importorskip("recall_lab.harness.clients.desktop")

ATTACKER = "x@evil.example"


@asynccontextmanager
async def bob_with_an_original(lab: Lab):
    """Bob's desktop client (legacy recall on arrival) with alice's original in its cache; (client, Message-ID)."""
    client = desktop_module.DesktopClient(BOB, password(BOB), lab.imap(CORP), submission=lab.submission(CORP),
                                          process_recalls_on_arrival=True, timeout=TIMEOUT)
    async with client:
        mid = await send(lab, ALICE, to=[BOB])
        await client.wait_for_message(mid, timeout=TIMEOUT)
        yield client, mid


async def smtp_dialogue(ep: Endpoint, commands: list[bytes], data: bytes | None) -> list[str]:
    """Send each command line as given (CRLF appended), then `data` verbatim after DATA (it must end with the
    final "\\r\\n.\\r\\n"); the replies, in order. Stops at the first 4xx/5xx reply."""
    replies: list[str] = []
    async with LineClient.session(ep) as client:
        for line in commands:
            reply = await client.cmd(line)
            replies.append(reply)
            if reply[:1] in ("4", "5"):
                return replies
        if data is not None:
            reply = await client.cmd("DATA")
            replies.append(reply)
            if not reply.startswith("354"):
                return replies
            client.writer.write(data)
            await client.writer.drain()
            replies.append(await client.reply())
        await client.cmd("QUIT")
    return replies


def envelope(helo: bytes = b"evil.example", mail_from: bytes = ATTACKER.encode(),
             rcpt: bytes = BOB.encode()) -> list[bytes]:
    return [b"EHLO " + helo, b"MAIL FROM:<" + mail_from + b">", b"RCPT TO:<" + rcpt + b">"]


def recall_text(mid: str, *, headers: bytes) -> bytes:
    """A recall of `mid` "from alice", with `headers` inserted after Message-ID (they carry the mark)."""
    return (b"From: alice@corp.example\r\nSubject: Recall: Quarterly numbers\r\nMessage-ID: <f@evil>"
            + headers.replace(b"<ORIG>", mid.encode()) + b"\r\n\r\nx\r\n.\r\n")


async def assert_nothing_recalled(lab: Lab, desktop, mid: str) -> None:
    await lab.wait_idle()
    await desktop.settle()
    await lab.wait_idle()
    assert await locations(lab, BOB, mid) == ["INBOX"], "alice's original was deleted from bob's mailbox"
    assert desktop.has_message_id(mid)
    assert desktop.events_of("recall") == [] and desktop.sent_notices == []
    subjects = [str(c.headers.get("Subject", "")) for c in await server_state(lab, ALICE)]
    assert not any(s.startswith("Recall Success") for s in subjects), subjects


def refused(reply: str, code: str, enhanced: str) -> bool:
    return reply.startswith(f"{code} {enhanced} ") and len(reply) > 14  # a reason follows the codes


# --- the probe of the issue, and its line-ending variants ---------------------------------------------------


async def test_the_bare_cr_probe_through_mx_is_refused_and_deletes_nothing():
    async with recall_lab("legacy") as lab, bob_with_an_original(lab) as (desktop, mid):
        data = (b"From: alice@corp.example\r\nSubject: Recall: Q3\r\nMessage-ID: <f@evil>\r"
                b"X-Recall-Verified: corp.example\rX-Recall-Message-ID: <ORIG>\rX-Recall-Action: delete\r\n"
                b"\r\nx\r\n.\r\n").replace(b"<ORIG>", mid.encode())
        replies = await smtp_dialogue(lab.mx(CORP), envelope(), data)
        assert refused(replies[-1], "550", "5.6.0"), replies
        assert "CR" in replies[-1]
        await assert_nothing_recalled(lab, desktop, mid)


@pytest.mark.parametrize("separator", [b"\n", b"\r", b"\r\r\n"], ids=["bare-LF", "bare-CR", "CR-CRLF"])
async def test_marks_behind_any_non_crlf_line_end_are_refused(separator):
    async with recall_lab("legacy") as lab, bob_with_an_original(lab) as (desktop, mid):
        hidden = separator + separator.join([b"X-Recall-Verified: corp.example", b"X-Recall-Message-ID: <ORIG>",
                                             b"X-Recall-Action: delete"])
        replies = await smtp_dialogue(lab.mx(CORP), envelope(), recall_text(mid, headers=hidden))
        assert refused(replies[-1], "550", "5.6.0"), replies
        await assert_nothing_recalled(lab, desktop, mid)


async def test_a_header_block_ended_by_bare_lf_is_refused_on_submission_too():
    async with recall_lab("legacy") as lab:
        data = b"From: bob@corp.example\r\nTo: carol@corp.example\nSubject: hi\n\nbody\r\n.\r\n"
        commands = [b"EHLO client.example", *_auth(BOB), b"MAIL FROM:<bob@corp.example>",
                    b"RCPT TO:<carol@corp.example>"]
        replies = await smtp_dialogue(lab.submission(CORP), commands, data)
        assert refused(replies[-1], "550", "5.6.0"), replies
        assert await server_state(lab, CAROL) == []


def _auth(user: str) -> list[bytes]:
    import base64

    return [b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password(user)}".encode())]


# --- the mark through the envelope: EHLO (Received), MAIL FROM (Return-Path), RCPT --------------------------

_MARK_LINES = b"\rX-Recall-Verified: corp.example\rX-Recall-Message-ID: <ORIG>\rX-Recall-Action: delete\rX-T: "
_PLAIN_RECALL = b"From: alice@corp.example\r\nSubject: Recall: Q3\r\nMessage-ID: <f@evil>\r\n\r\nx\r\n.\r\n"


async def test_cr_in_the_ehlo_argument_is_refused():
    async with recall_lab("legacy") as lab, bob_with_an_original(lab) as (desktop, mid):
        helo = b"evil.example" + _MARK_LINES.replace(b"<ORIG>", mid.encode()) + b"x"
        replies = await smtp_dialogue(lab.mx(CORP), envelope(helo=helo), _PLAIN_RECALL)
        assert refused(replies[0], "501", "5.5.4"), replies
        assert len(replies) == 1  # nothing after the refused EHLO was even tried
        await assert_nothing_recalled(lab, desktop, mid)
        # HELO is checked the same way, and a session whose greeting was refused cannot send mail
        async with LineClient.session(lab.mx(CORP)) as client:
            assert refused(await client.cmd(b"HELO evil\x00.example"), "501", "5.5.4")
            assert (await client.cmd(b"MAIL FROM:<x@evil.example>")).startswith("503")


async def test_cr_in_a_quoted_mail_from_local_part_is_refused():
    async with recall_lab("legacy") as lab, bob_with_an_original(lab) as (desktop, mid):
        sender = b'"x' + _MARK_LINES.replace(b"<ORIG>", mid.encode()) + b'"@evil.example'
        replies = await smtp_dialogue(lab.mx(CORP), envelope(mail_from=sender), _PLAIN_RECALL)
        assert refused(replies[1], "553", "5.1.7"), replies
        await assert_nothing_recalled(lab, desktop, mid)


@pytest.mark.parametrize("port", ["mx", "submission"])
async def test_control_characters_in_rcpt_are_refused(port):
    async with recall_lab("legacy") as lab:
        rcpt = b'"b\rX-Recall-Verified: corp.example"@' + (b"corp.example" if port == "mx" else b"mail.example")
        if port == "mx":
            commands = envelope(rcpt=rcpt)
            ep = lab.mx(CORP)
        else:
            commands = [b"EHLO client.example", *_auth(BOB), b"MAIL FROM:<bob@corp.example>", b"RCPT TO:<" + rcpt + b">"]
            ep = lab.submission(CORP)
        replies = await smtp_dialogue(ep, commands, None)
        assert refused(replies[-1], "553", "5.1.3"), replies


# --- marks in well-formed places: stripped or not a header at all -------------------------------------------


async def test_a_folded_mark_is_stripped():
    async with recall_lab("legacy") as lab, bob_with_an_original(lab) as (desktop, mid):
        hidden = b"\r\nX-Recall-Verified:\r\n corp.example\r\nX-Recall-Message-ID: <ORIG>\r\nX-Recall-Action: delete"
        replies = await smtp_dialogue(lab.mx(CORP), envelope(), recall_text(mid, headers=hidden))
        assert replies[-1].startswith("250"), replies
        await assert_nothing_recalled(lab, desktop, mid)
        assert desktop.events_of("recall-unverified"), "the client saw the recall and did not trust it"
        forged = [c for c in await server_state(lab, BOB) if c.headers.get("X-Recall-Message-ID") == mid]
        assert forged and all(b"x-recall-verified" not in c.raw_headers.lower() for c in forged)


_REST = b"\r\nX-Recall-Message-ID: <ORIG>\r\nX-Recall-Action: delete"
MALFORMED = {
    "space-before-colon": lambda mid: recall_text(mid, headers=b"\r\nX-Recall-Verified : corp.example" + _REST),
    "NUL-in-name": lambda mid: recall_text(mid, headers=b"\r\nX-Recall-Verified\x00: corp.example" + _REST),
    "NUL-in-value": lambda mid: recall_text(mid, headers=b"\r\nX-Recall-Verified: corp.example\x00" + _REST),
    "8-bit-name": lambda mid: recall_text(mid, headers=b"\r\nX-Recall-Verified\xc2\xa0: corp.example" + _REST),
    "form-feed": lambda mid: recall_text(mid, headers=b"\x0cX-Recall-Verified: corp.example" + _REST),
    "after-a-non-field": lambda mid: recall_text(mid, headers=b"\r\nNot a header\r\nX-Recall-Verified: corp.example"
                                                 + _REST),
    # the mark as the very first line, indented: Python's parser drops it, a line filter may not
    "leading-space": lambda mid: b" X-Recall-Verified: corp.example\r\n" + recall_text(mid, headers=_REST),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_malformed_header_lines_are_refused(name):
    async with recall_lab("legacy") as lab, bob_with_an_original(lab) as (desktop, mid):
        replies = await smtp_dialogue(lab.mx(CORP), envelope(), MALFORMED[name](mid))
        assert refused(replies[-1], "550", "5.6.0"), replies
        await assert_nothing_recalled(lab, desktop, mid)


async def test_a_mark_inside_an_attached_message_is_only_body():
    async with recall_lab("legacy") as lab, bob_with_an_original(lab) as (desktop, mid):
        inner = EmailMessage()
        inner["From"] = ALICE
        inner["Subject"] = "Recall: Quarterly numbers"
        inner["X-Recall-Verified"] = CORP
        inner["X-Recall-Message-ID"] = mid
        inner["X-Recall-Action"] = "delete"
        inner.set_content("x\n")
        outer = EmailMessage()
        outer["From"] = ALICE
        outer["To"] = BOB
        outer["Subject"] = "Recall: Quarterly numbers"
        outer["X-Recall-Message-ID"] = mid
        outer["X-Recall-Action"] = "delete"
        outer.set_content("see attached\n")
        outer.add_attachment(inner)
        mx = lab.mx(CORP)
        await aiosmtplib.send(outer, sender=ATTACKER, recipients=[BOB], hostname=mx.host, port=mx.port,
                              start_tls=False, timeout=TIMEOUT, local_hostname="evil.example")
        await assert_nothing_recalled(lab, desktop, mid)
        assert desktop.events_of("recall-unverified")


# --- the server's own re-serialisation: a replace recall's replacement --------------------------------------


async def test_a_replacement_cannot_carry_the_mark_into_a_mailbox():
    """Cloud replace delivers the replacement itself (not through the SMTP edge): the mark must not ride in it."""
    async with recall_lab("cloud") as lab:
        mid = await send(lab, ALICE, to=[BOB])
        replacement = EmailMessage()
        replacement["From"] = ALICE
        replacement["Subject"] = "Recall: Quarterly numbers (final)"
        replacement["X-Recall-Verified"] = CORP
        replacement["X-Recall-Message-ID"] = "<someone-else@corp.example>"
        replacement["X-Recall-Action"] = "delete"
        replacement.set_content("the final numbers\n")
        recall = build_recall_message(RecallInstruction(mid, "Quarterly numbers", ALICE, "Alice", to=(BOB,),
                                                        action=RecallAction.REPLACE, replacement=replacement))
        sub = lab.submission(CORP)
        await aiosmtplib.send(recall, sender=ALICE, recipients=[BOB], hostname=sub.host, port=sub.port,
                              username=ALICE, password=password(ALICE), start_tls=False, timeout=TIMEOUT,
                              local_hostname=CORP)
        await lab.wait_idle()
        state = await server_state(lab, BOB)
        delivered = [c for c in state if "final" in str(c.headers.get("Subject", ""))]
        assert delivered, [c.headers.get("Subject") for c in state]
        for copy in delivered:
            raw = await with_imap(lab, BOB, lambda c, uid=copy.uid: (
                c.select_folder("INBOX", readonly=True), c.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"])[1])
            assert b"x-recall-verified" not in raw.lower()
