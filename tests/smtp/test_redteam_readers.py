"""Every reader of the lab reads what the server vouched for, and who wrote it, the same way: sans-I/O probes of
the readers an outsider's bytes reach after submission accepted them.

Why these readers: test_from_spoofing.py proves the submission check against email.policy.default and the trust
code. Recipients also read a From through the IMAP server's ENVELOPE (what IMAP clients show, and the web
client's fallback) and through the clients' preview line; a recall report through the recall agent; a
replacement through the recall policy. Each is a place where two readings could part.
"""

from __future__ import annotations

from email import policy as email_policy
from email.parser import BytesParser
from email.utils import getaddresses

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.domain import Endpoint
from recall_lab.fake_servers.imap.mime.view import MessageView
from recall_lab.fake_servers.recall import format as recall_format
from recall_lab.fake_servers.recall.trust import judge_replacement
from recall_lab.fake_servers.smtp.handlers import SubmissionHandler
from recall_lab.harness.clients.preview import preview_of
from recall_lab.harness.recall_agent import ReportReader

PARSER = BytesParser(policy=email_policy.default)
ALICE, BOB, CAROL = "alice@corp.example", "bob@corp.example", "carol@corp.example"
HANDLER = SubmissionHandler(None)  # type: ignore[arg-type]  # the content check needs no server

# --- From, as IMAP clients and the lab's clients show it -----------------------------------------------------

_fragments = st.sampled_from([
    b"alice@corp.example", b"bob@corp.example", b"BOB@CORP.EXAMPLE", b"alice", b"bob", b"@", b"corp.example",
    b"<", b">", b'"', b"\\", b"(", b")", b",", b";", b":", b".", b"[", b"]", b" ", b"\t", b"\r\n ", b"\xc3\xa9",
    b"Alice", b"@x:", b"@x,@y:", b'\\"', b"(a(b)c)", b"=?utf-8?q?alice=40corp.example?=", b"=?utf-8?q?=3C?=",
    b"=?utf-8?q?=22?=", b"=?utf-8?q?=3Calice=40corp.example=3E?=", b"=?utf-8?b?YWxpY2VAY29ycC5leGFtcGxl?=",
    b"(alice@corp.example)", b'"alice@corp.example"', b"%", b"!", b"'", b"=", b"?"])
_cores = st.sampled_from([b"<bob@corp.example>", b"bob@corp.example", b" <bob@corp.example>",
                          b"bob@corp.example (", b"<BOB@corp.example>"])
#: Mostly values built around a real address of bob's, so that many are accepted and the readers get work.
from_values = st.tuples(st.lists(_fragments, max_size=4), _cores, st.lists(_fragments, max_size=3)).map(
    lambda t: b"".join(t[0]) + t[1] + b"".join(t[2]))


def _message(from_value: bytes, sender: bool = False) -> bytes:
    """A message with `from_value` as its From, or (`sender`) as its Sender with a plain From of bob's."""
    head = b"From: bob@corp.example\r\nSender: " + from_value if sender else b"From: " + from_value
    return head + b"\r\nTo: carol@corp.example\r\nSubject: hi\r\nMessage-ID: <r@corp.example>\r\n\r\nhello\r\n"


def _envelope_addresses(raw: bytes, index: int) -> list[str]:
    """mailbox@host of every address of one ENVELOPE field (2: from, 3: sender), as the IMAP server sends it."""
    out = []
    for _name, _route, mailbox, host in MessageView(raw).envelope()[index] or []:
        text = [v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "") for v in (mailbox, host)]
        out.append("@".join(text).lower())
    return out


@settings(max_examples=2500, deadline=None)
@given(from_values, st.booleans())
@example(b"=?utf-8?b?YWxpY2VAY29ycC5leGFtcGxl?= <bob@corp.example>", False)
@example(b"bob@corp.example (alice@corp.example)", False)
@example(b'"alice@corp.example" <bob@corp.example>', True)
@example(b"bob @ corp.example", False)
def test_whenever_submission_accepts_a_from_imap_clients_and_previews_show_the_user(value, as_sender):
    raw = _message(value, as_sender)
    refusal, _block = HANDLER.refuse_content(BOB, raw)
    if refusal is not None:
        return
    assert _envelope_addresses(raw, 2) == _envelope_addresses(raw, 3) == [BOB]  # ENVELOPE from and sender
    shown = preview_of(raw).sender  # the line a client shows; read back, it names bob alone
    assert [a.lower() for _n, a in getaddresses([shown])] == [BOB], shown


# --- kinds: a message the server vouches for is read as the kind it was vouched for -----------------------------


def _notice(**extra: str) -> bytes:
    notice = recall_format.RecallNotice("<orig@corp.example>", "Q3", BOB, recall_format.RecallStatus.RECALLED)
    msg = recall_format.build_notice(notice, to=ALICE)
    for name, value in extra.items():
        msg[name.replace("_", "-")] = value
    return msg.as_bytes(policy=email_policy.SMTP)


def _report_carried_by_a_notice() -> bytes:
    report = recall_format.RecallReport("<orig@corp.example>", "Q3",
                                        (recall_format.RecipientResult(CAROL, recall_format.RecallStatus.RECALLED),),
                                        recall_message_id="<recall@corp.example>", mode="legacy")
    msg = recall_format.build_report(report, to=ALICE, from_addr=BOB)
    msg[recall_format.HEADER_NOTICE] = "success"
    msg[recall_format.HEADER_RECIPIENT] = BOB
    msg[recall_format.HEADER_STATUS] = "recalled"
    return msg.as_bytes(policy=email_policy.SMTP)


@pytest.mark.parametrize("raw, kind", [
    (_notice(), "notice"),
    (_notice(X_Recall_Report="<recall@corp.example>"), None),
    (_notice(X_Recall_Action="delete"), None),
    (_report_carried_by_a_notice(), None),
], ids=["notice", "notice+report", "notice+recall", "report-json-in-a-notice"])
def test_a_message_is_one_kind_or_none(raw: bytes, kind: str | None) -> None:
    assert recall_format.message_kind(raw) == kind
    assert recall_format.is_notice(raw) is (kind == "notice")
    assert not recall_format.is_report(raw) and not recall_format.is_recall_instruction(raw)


def test_the_agent_reads_no_report_out_of_a_vouched_notice() -> None:
    """Even carrying the server's mark, a notice that is also a report writes nothing but its own recipient."""
    reader = ReportReader(Endpoint("127.0.0.1", 9), ALICE, "x", "<orig@corp.example>", "<recall@corp.example>")
    reader._absorb(recall_format.mark_verified(_report_carried_by_a_notice(), "corp.example"))
    assert reader.report is None and reader.later_reports == [] and reader.notices == []


# --- the replacement of a replace recall is held to the submission check of From -------------------------------


@pytest.mark.parametrize("head", [
    b"From: Alice <alice@corp.example>\r\n",
    b"From: bob@corp.example\r\nSender: alice@corp.example\r\n",
    b"From: bob@corp.example\r\nFrom: alice@corp.example\r\n",
    b"From: alice@corp.example <bob@corp.example>\r\n",
    b"Subject: no From at all\r\n",
    b"From: bob@corp.example\r\nSubject: x\rFrom: alice@corp.example\r\n",
    b"From: bob@corp.example\r\nX-Trailing : y\r\n",
], ids=["from-alice", "sender-alice", "two-froms", "two-ways", "no-from", "bare-cr", "space-before-colon"])
def test_a_replacement_not_in_the_senders_own_name_is_refused(head: bytes) -> None:
    decision = judge_replacement(head + b"To: carol@corp.example\r\n\r\nPay the bearer.\r\n", BOB)
    assert not decision.honoured and BOB in decision.reason


def test_a_replacement_in_the_senders_name_is_fine() -> None:
    raw = b"From: Bob <BOB@corp.example>\r\nSender: bob@corp.example\r\nSubject: final\r\n\r\nThe figures.\r\n"
    assert judge_replacement(raw, BOB).honoured
