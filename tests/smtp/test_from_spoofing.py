"""From spoofing on submission: one reader of From/Sender (fake_servers/smtp/addresses.py) for the submission
check, the recall trust code and the clients; what it cannot read one way only is refused with 553 5.7.1.

The promise, fuzzed with hypothesis over adversarial values (quotes, angle brackets, backslashes, comments,
encoded words, groups, white space, folds, CR/LF, NUL, 8-bit octets): whenever submission accepts a From for user
U, email.policy.default's parse of the delivered message gives exactly U as its only From mailbox, and the trust
code and the desktop client read U too. The fast path for plain values is proven to answer as the slow path.
"""

from __future__ import annotations

import base64
from email import policy as email_policy
from email.parser import BytesParser
from email.utils import getaddresses

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.recall.format import notice_sender
from recall_lab.fake_servers.recall.trust import from_address
from recall_lab.fake_servers.smtp.addresses import (
    AmbiguousAddress,
    fast_address,
    fast_mailbox,
    parse_mailboxes,
)
from recall_lab.fake_servers.smtp.handlers import SubmissionHandler
from recall_lab.fake_servers.smtp.headers import HeaderBlock
from recall_lab.fake_servers.smtp.headers import addresses as header_addresses
from recall_lab.harness.clients.legacy_recall import sender_of
from tests.smtp.smtp_helpers import LineClient, imap_messages

PARSER = BytesParser(policy=email_policy.default)
BOB, CAROL = "bob@corp.example", "carol@corp.example"

#: The issue's three, and relatives: each reads as bob to some reader and as alice (or more) to another.
SPOOFS = [
    b"alice@corp.example <bob@corp.example>",
    b"<alice@corp.example <bob@corp.example>",
    b"alice@corp.example\\ <bob@corp.example>",
    b'"bob" <alice@corp.example> (<bob@corp.example>)',
    b"alice@corp.example, <bob@corp.example>",
    b"bob@corp.example, alice@corp.example",
    b"undisclosed: bob@corp.example;",
    b"=?utf-8?q?bob?=@corp.example",
    b"bob@corp.example <alice@corp.example>",
    b"<bob@corp.example> alice@corp.example",
    b'"<bob@corp.example>" alice@corp.example',
    b"bob@corp.example\r\n\t<alice@corp.example>",
]
#: Plain and not-so-plain ways to write bob that every reader reads as bob.
FINE = [
    b"bob@corp.example",
    b"Bob <bob@corp.example>",
    b"  Bob  Smith   <BOB@corp.example>  ",
    b'"Smith, Bob" <bob@corp.example>',
    b"bob@corp.example (Bob)",
    b"=?utf-8?q?B=C3=B6b?= <bob@corp.example>",
    b"=?utf-8?q?alice=40corp=2Eexample?= <bob@corp.example>",  # looks like alice to a person: the address is bob
    b"Bob\r\n <bob@corp.example>",
    b"B\xc3\xb6b <bob@corp.example>",
]


def _message(from_value: bytes, extra: bytes = b"") -> bytes:
    return (b"From: " + from_value + b"\r\nTo: carol@corp.example\r\nSubject: hi\r\n" + extra
            + b"Message-ID: <spoof@corp.example>\r\n\r\nhello\r\n")


async def _submit(lab, data: bytes) -> str:
    async with LineClient.session(lab.submission("corp.example")) as c:
        await c.ehlo()
        token = base64.b64encode(f"\0{BOB}\0bob-password".encode()).decode()
        assert (await c.cmd(f"AUTH PLAIN {token}")).startswith("235")
        assert (await c.cmd(f"MAIL FROM:<{BOB}>")).startswith("250")
        assert (await c.cmd(f"RCPT TO:<{CAROL}>")).startswith("250")
        assert (await c.cmd("DATA")).startswith("354")
        c.writer.write(data + b".\r\n")
        await c.writer.drain()
        return await c.reply()


@pytest.mark.parametrize("value", SPOOFS, ids=lambda v: repr(v[:40]))
async def test_a_from_that_reads_two_ways_is_refused(lab, value):
    reply = await _submit(lab, _message(value))
    assert reply.startswith("553 5.7.1 From header"), reply
    assert len(reply) > 40  # with the reason
    await lab.wait_idle()
    assert await imap_messages(lab, CAROL) == []


@pytest.mark.parametrize("value", FINE, ids=lambda v: repr(v[:40]))
async def test_a_from_naming_the_user_plainly_is_delivered_as_the_user(lab, value):
    reply = await _submit(lab, _message(value))
    assert reply.startswith("250"), reply
    await lab.wait_idle()
    [raw] = await imap_messages(lab, CAROL)
    froms = PARSER.parsebytes(raw)["From"].addresses
    assert [a.addr_spec.lower() for a in froms] == [BOB]
    assert from_address(raw) == from_address(PARSER.parsebytes(raw)) == sender_of(raw) == BOB


@pytest.mark.parametrize("extra", [b"Sender: alice@corp.example\r\n", b"Sender: alice@corp.example <bob@corp.example>\r\n",
                                   b"Sender: bob@corp.example\r\nSender: bob@corp.example\r\n",
                                   b"From: bob@corp.example\r\n", b"Sender: bob@corp.example, alice@corp.example\r\n"],
                         ids=["other-sender", "two-way-sender", "two-senders", "two-froms", "sender-list"])
async def test_sender_and_duplicate_fields_are_read_the_same_way(lab, extra):
    reply = await _submit(lab, _message(b"bob@corp.example", extra))
    assert reply.startswith("553 5.7.1"), reply
    await lab.wait_idle()
    assert await imap_messages(lab, CAROL) == []


async def test_a_sender_naming_the_user_is_fine(lab):
    assert (await _submit(lab, _message(b"Bob <bob@corp.example>", b"Sender: bob@corp.example\r\n"))).startswith("250")


# --- the property, sans-I/O: the DATA decision of the submission listener against policy.default -----------

_fragments = st.sampled_from([
    b"alice@corp.example", b"bob@corp.example", b"BOB@CORP.EXAMPLE", b"bob", b"@", b"corp.example", b"<", b">",
    b'"', b"\\", b"(", b")", b",", b";", b":", b".", b"[", b"]", b" ", b"  ", b"\t", b"\r\n ", b"\r\n\t",
    b"\r", b"\n", b"\x00", b"\xc3\xa9", b"\xff", b"Alice", b"Bob", b"g:", b"=?utf-8?q?alice=40corp.example?=",
    b"=?utf-8?q?bob?=", b"=?utf-8?b?Ym9iQGNvcnAuZXhhbXBsZQ==?=", b"?=", b"=?", b"<bob@corp.example>",
    b"<alice@corp.example>", b"(bob@corp.example)", b'"bob@corp.example"', b"@corp.example:"])
from_values = st.lists(_fragments, min_size=1, max_size=10).map(b"".join)
HANDLER = SubmissionHandler(None)  # type: ignore[arg-type]  # check_content needs no server


def _delivered(raw: bytes) -> bytes:
    """What a recipient's mailbox holds: the server prepends trace fields only."""
    return (b"Return-Path: <bob@corp.example>\r\nDelivered-To: carol@corp.example\r\n"
            b"Received: from client.example ([127.0.0.1]) by corp.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n" + raw)


@settings(max_examples=3000, deadline=None)
@given(from_values, st.sampled_from([b"", b"Sender: bob@corp.example\r\n", b"Sender: "]))
@example(b"alice@corp.example <bob@corp.example>", b"")
@example(b"<alice@corp.example <bob@corp.example>", b"")
@example(b"alice@corp.example\\ <bob@corp.example>", b"")
def test_whenever_submission_accepts_a_from_recipients_read_exactly_the_user(value, sender):
    if sender == b"Sender: ":
        raw = _message(b"bob@corp.example", b"Sender: " + value + b"\r\n")
    else:
        raw = _message(value, sender)
    refusal, _block = HANDLER.refuse_content(BOB, raw)
    if refusal is not None:
        assert refusal.startswith(("553 5.7.1 ", "550 5.6.0 ")), refusal
        return
    delivered = _delivered(raw)
    msg = PARSER.parsebytes(delivered)
    assert [a.addr_spec.lower() for a in msg["From"].addresses] == [BOB]
    assert len(msg.get_all("From")) == 1
    if msg["Sender"] is not None:
        assert [a.addr_spec.lower() for a in msg["Sender"].addresses] == [BOB]
    # and every reader of the lab agrees: trust (bytes or parsed), the notice reader, the desktop client
    assert from_address(delivered) == from_address(msg) == notice_sender(delivered) == sender_of(delivered) == BOB


@settings(max_examples=2000, deadline=None)
@given(from_values)
def test_submission_and_trust_read_any_value_alike_or_refuse(value):
    """For any From value: the address the submission check would accept and the one the trust code reads are
    the same, or one of them refuses."""
    raw = _message(value)
    refusal, _block = HANDLER.refuse_content(BOB, raw)
    trusted = from_address(PARSER.parsebytes(raw))
    if refusal is None:
        assert trusted == BOB
    elif trusted is not None and refusal.startswith("553 5.7.1 From header must be"):
        assert trusted != BOB  # a different person, read alike


# --- the fast path is the slow path, where it answers --------------------------------------------------------

_plainish = st.text(alphabet="abcAB09._-+=?/'!# <>@,\t\"\\()", max_size=40)


@settings(max_examples=3000, deadline=None)
@given(_plainish | from_values.map(lambda b: b.decode("ascii", "surrogateescape")))
@example("Bob <bob@corp.example>")
@example("bob@corp.example")
@example("a.b <c@d.example>")
@example("=?utf-8?q?alice?=@corp.example")
def test_the_fast_path_answers_as_policy_default_and_getaddresses(value):
    fast = fast_mailbox(value)
    assert fast_address(value) == (None if fast is None else fast.address)
    if fast is None:
        return
    assert parse_mailboxes(value) == [fast]
    assert [a.lower() for _n, a in getaddresses([value])] == [fast.address]


@settings(max_examples=1500, deadline=None)
@given(st.lists(_plainish | from_values.map(lambda b: b.decode("ascii", "surrogateescape")), min_size=1,
                max_size=3).map(", ".join))
def test_the_address_list_reader_of_to_and_cc_is_getaddresses(value):
    """To/Cc (for the Bcc bookkeeping) are read as UTF-8 text, by getaddresses; the fast path changes nothing."""
    raw = b"To: " + value.encode("ascii", "surrogateescape") + b"\r\n\r\n"
    [text] = HeaderBlock(raw).values("To")
    assert header_addresses(raw, "To") == [a.lower() for _n, a in getaddresses([text]) if a]


def test_refusals_say_why():
    with pytest.raises(AmbiguousAddress, match="reads as"):
        parse_mailboxes('"bob"@corp.example')  # policy.default unquotes the local part, getaddresses does not
    with pytest.raises(AmbiguousAddress, match="does not parse cleanly"):
        parse_mailboxes("alice@corp.example <bob@corp.example>")
    with pytest.raises(AmbiguousAddress, match="group"):
        parse_mailboxes("team: bob@corp.example;")
    reply, _ = HANDLER.refuse_content(BOB, _message(b"alice@corp.example <bob@corp.example>"))
    assert reply is not None and reply.startswith("553 5.7.1 From header refused: From does not parse cleanly")
    assert "<bob@corp.example>" in reply
