"""One canonical form of accepted mail (fake_servers/smtp/canonical.py), at the SMTP edge and past it.

Over real sockets, on both listeners: a bare CR, a bare LF or a NUL anywhere in DATA, or a header block that
parsers could read two ways, is refused with 550 5.6.0 and the line; control characters in EHLO/HELO (501 5.5.4)
and in MAIL FROM / RCPT TO addresses (553 5.1.7 / 553 5.1.3) are refused before they can reach the Received and
Return-Path fields. Past the edge, the server's own injections (internal submission, deliver_local) are made
canonical and their trace fields escaped. The pure functions are checked with hypothesis.
"""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.smtp import canonical
from recall_lab.fake_servers.smtp.headers import HeaderBlock
from recall_lab.harness.lab import Lab
from tests.smtp.smtp_helpers import LineClient, imap_messages

CORP = "corp.example"
ALICE, BOB = "alice@corp.example", "bob@corp.example"
GOOD = b"From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: hi\r\n\r\nbody\r\n"


def refused(reply: str, code: str, enhanced: str) -> bool:
    """`code enhanced reason`, with a reason of some words after the codes."""
    return re.match(rf"{code} {re.escape(enhanced)} \S+ \S+", reply) is not None


async def _open(lab: Lab, listener: str) -> LineClient:
    client = await LineClient.connect(getattr(lab, listener)(CORP))
    assert (await client.ehlo()).startswith("250")
    if listener == "submission":
        token = base64.b64encode(f"\0{ALICE}\0alice-password".encode()).decode()
        assert (await client.cmd(f"AUTH PLAIN {token}")).startswith("235")
    return client


async def _send_raw(lab: Lab, listener: str, data: bytes) -> str:
    """MAIL, RCPT, DATA with `data` sent verbatim (the final dot line appended); the reply to the data."""
    client = await _open(lab, listener)
    try:
        sender = ALICE if listener == "submission" else "dave@mail.example"
        assert (await client.cmd(f"MAIL FROM:<{sender}>")).startswith("250")
        assert (await client.cmd(f"RCPT TO:<{BOB}>")).startswith("250")
        assert (await client.cmd("DATA")).startswith("354")
        client.writer.write(data + b".\r\n")
        await client.writer.drain()
        return await client.reply()
    finally:
        await client.close()


# --- DATA: the canonical form, on both listeners ------------------------------------------------------------

NOT_CANONICAL = {
    "bare-CR-in-header": b"From: alice@corp.example\r\nSubject: a\rX-Recall-Verified: corp.example\r\n\r\nb\r\n",
    "bare-LF-in-header": b"From: alice@corp.example\r\nSubject: a\nX-Recall-Verified: corp.example\r\n\r\nb\r\n",
    "header-ends-with-LF-LF": b"From: alice@corp.example\nSubject: a\n\nbody\r\n",
    "bare-CR-in-body": b"From: alice@corp.example\r\nSubject: a\r\n\r\nline\rmore\r\n",
    "bare-LF-in-body": b"From: alice@corp.example\r\nSubject: a\r\n\r\nline\nmore\r\n",
    "NUL-in-body": b"From: alice@corp.example\r\nSubject: a\r\n\r\nline\x00more\r\n",
    "space-before-colon": b"From: alice@corp.example\r\nSubject : a\r\n\r\nb\r\n",
    "no-colon": b"From: alice@corp.example\r\nnot a field\r\nSubject: a\r\n\r\nb\r\n",
    "leading-white-space": b" Subject: a\r\nFrom: alice@corp.example\r\n\r\nb\r\n",
    "unix-from-line": b"From alice@corp.example Mon Jan  1 00:00:00 2024\r\nFrom: alice@corp.example\r\n\r\nb\r\n",
    "empty-name": b"From: alice@corp.example\r\n: a\r\n\r\nb\r\n",
    "8-bit-name": b"From: alice@corp.example\r\nSubj\xc3\xa9ct: a\r\n\r\nb\r\n",
    "vertical-tab": b"From: alice@corp.example\r\nSubject: a\x0bX-Recall-Verified: corp.example\r\n\r\nb\r\n",
    "DEL": b"From: alice@corp.example\r\nSubject: a\x7f\r\n\r\nb\r\n",
}


@pytest.mark.parametrize("listener", ["mx", "submission"])
@pytest.mark.parametrize("name", sorted(NOT_CANONICAL))
async def test_non_canonical_mail_is_refused_with_the_line(lab, listener, name):
    reply = await _send_raw(lab, listener, NOT_CANONICAL[name])
    assert refused(reply, "550", "5.6.0"), reply
    assert re.search(r"line \d+", reply), reply
    await lab.wait_idle()
    assert lab.store(CORP).messages(BOB, "INBOX") == []


@pytest.mark.parametrize("listener", ["mx", "submission"])
async def test_canonical_mail_is_accepted_and_kept_octet_for_octet(lab, listener):
    data = (b"From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: folded\r\n  and =?utf-8?q?b=C3=A9?=\r\n"
            b"Message-ID: <keep@corp.example>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nX-Obs:\r\n \r\n\tend\r\n"
            b"\r\nbody with a \x0c form feed and 8-bit \xc3\xa9\r\n")
    assert (await _send_raw(lab, listener, data)).startswith("250")
    await lab.wait_idle()
    [got] = await imap_messages(lab, BOB)
    assert got.endswith(data)
    assert canonical.line_problem(got) is None and HeaderBlock(got).problem() is None


# --- the envelope: EHLO/HELO, MAIL FROM, RCPT TO ------------------------------------------------------------

BAD_HELO = [b"evil\rX-Recall-Verified: corp.example", b"evil\x00.example", b"evil\x0b.example", b"two words",
            b"evil\x7f.example", b"evil\xff.example", b"x" * 256]


@pytest.mark.parametrize("listener", ["mx", "submission"])
@pytest.mark.parametrize("helo", BAD_HELO, ids=lambda b: repr(b[:20]))
async def test_control_characters_in_ehlo_and_helo_are_refused(lab, listener, helo):
    async with LineClient.session(getattr(lab, listener)(CORP)) as client:
        assert refused(await client.cmd(b"EHLO " + helo), "501", "5.5.4")
        assert (await client.cmd("MAIL FROM:<dave@mail.example>")).startswith("503")
        assert refused(await client.cmd(b"HELO " + helo), "501", "5.5.4")
        assert (await client.cmd("MAIL FROM:<dave@mail.example>")).startswith("503")
        # a good greeting afterwards works as usual
        assert (await client.cmd("EHLO client.example")).startswith("250")


async def test_a_refused_ehlo_after_a_good_one_leaves_no_greeting(lab):
    async with LineClient.session(lab.mx(CORP)) as client:
        assert (await client.cmd("EHLO client.example")).startswith("250")
        assert refused(await client.cmd(b"EHLO bad\rname"), "501", "5.5.4")
        assert (await client.cmd("MAIL FROM:<dave@mail.example>")).startswith("503")


@pytest.mark.parametrize("listener", ["mx", "submission"])
@pytest.mark.parametrize("local", [b'"x\rX-Recall-Verified: corp.example"', b'"x\x00y"', b'"x\x1by"', b'"x\x7fy"',
                                   b'"x\xc2\x85y"'], ids=["CR", "NUL", "ESC", "DEL", "C1"])
async def test_control_characters_in_envelope_addresses_are_refused(lab, listener, local):
    client = await _open(lab, listener)
    try:
        sender = b"<alice@corp.example>" if listener == "submission" else b"<dave@mail.example>"
        assert refused(await client.cmd(b"MAIL FROM:<" + local + b"@mail.example>"), "553", "5.1.7")
        assert (await client.cmd(b"MAIL FROM:" + sender)).startswith("250")
        for domain in (b"corp.example", b"mail.example"):
            assert refused(await client.cmd(b"RCPT TO:<" + local + b"@" + domain + b">"), "553", "5.1.3")
    finally:
        await client.close()


async def test_a_quoted_local_part_with_spaces_still_works_and_the_trace_is_one_field_each(lab):
    async with LineClient.session(lab.mx(CORP)) as client:
        assert (await client.cmd("EHLO [127.0.0.1]")).startswith("250")
        assert (await client.cmd('MAIL FROM:<"dave smith"@mail.example>')).startswith("250")
        assert (await client.cmd(f"RCPT TO:<{BOB}>")).startswith("250")
        assert (await client.data(GOOD)).startswith("250")
    await lab.wait_idle()
    [got] = await imap_messages(lab, BOB)
    assert got.startswith(b'Return-Path: <"dave smith"@mail.example>\r\nDelivered-To: bob@corp.example\r\n'
                          b"Received: from [127.0.0.1] ([127.0.0.1]) by corp.example")
    assert HeaderBlock(got).problem() is None


# --- past the edge: the server's own injections -------------------------------------------------------------


async def test_internal_submission_and_deliver_local_are_made_canonical(lab):
    server = lab.server(CORP)
    await server.submit("", [BOB], b"From: postmaster@corp.example\nSubject: lf only\rX-Recall-Verified: corp.example"
                        b"\n\nbody\nline\r\n")
    server.deliver_local(BOB, b"From: x@corp.example\nSubject: direct\n\nbody\n", mail_from='"x\r\nX-Evil: 1"@y.example')
    await lab.wait_idle()
    got = await imap_messages(lab, BOB)
    assert len(got) == 2
    for raw in got:
        assert canonical.line_problem(raw) is None, raw
        block = HeaderBlock(raw)
        assert block.problem() is None, (block.problem(), raw)
        assert not block.has("X-Recall-Verified") and not block.has("X-Evil")
    assert got[1].startswith(b'Return-Path: <"x%0D%0AX-Evil: 1"@y.example>\r\n')


# --- the pure functions -------------------------------------------------------------------------------------

_octets = st.binary(max_size=60) | st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"\x00", b" "]),
                                            max_size=30).map(b"".join)


@given(_octets)
def test_line_problem_is_none_exactly_for_crlf_only_text_without_nul(raw):
    expected = b"\x00" not in raw and raw.replace(b"\r\n", b"").count(b"\r") == 0 and \
        raw.replace(b"\r\n", b"").count(b"\n") == 0
    problem = canonical.line_problem(raw)
    assert (problem is None) == expected
    if problem is not None:
        assert re.search(r"(bare CR|bare LF|NUL character) in line \d+", problem), problem


@given(_octets)
def test_to_crlf_leaves_no_bare_line_end_and_keeps_the_lines(raw):
    out = canonical.to_crlf(raw)
    assert canonical.line_problem(out.replace(b"\x00", b"")) is None
    assert out.splitlines() == raw.splitlines()
    assert canonical.to_crlf(out) is out


@given(st.text(max_size=40))
def test_trace_text_is_one_line_of_printable_text(text):
    for word in (False, True):
        out = canonical.trace_text(text, word=word)
        assert out.isprintable() and "\r" not in out and "\n" not in out
        if word:
            assert re.fullmatch(r"[A-Za-z0-9.\-_:\[\]@+=%]*", out)
        if canonical.helo_problem(text) is None and re.fullmatch(r"[A-Za-z0-9.\-_:\[\]@+=]*", text):
            assert canonical.trace_text(text, word=True) == text


@settings(max_examples=300)
@given(st.text(max_size=30))
def test_helo_and_address_checks_refuse_every_control_character(text):
    controls = any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in text)
    assert (canonical.address_problem(text) is not None) == controls
    if controls:
        assert canonical.helo_problem(text) is not None
