"""Round-trips and edge cases of the recall wire format (instruction, report, notice)."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.recall.format import (
    HEADER_ACTION,
    HEADER_MESSAGE_ID,
    RecallAction,
    RecallFormatError,
    RecallInstruction,
    RecallNotice,
    RecallReport,
    RecallStatus,
    RecipientResult,
    build_notice,
    build_recall_message,
    build_report,
    is_notice,
    is_recall_instruction,
    is_report,
    merge_report,
    normalise_subject,
    parse_notice,
    parse_recall_instruction,
    parse_report,
    pending_report,
)

_atom = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=20).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s)
_domain = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12),
                   min_size=2, max_size=3).map(".".join)
addresses = st.builds(lambda local, d: f"{local}@{d}", _atom, _domain)
message_ids = st.builds(lambda local, d: f"<{local}@{d}>", _atom, _domain)
# Any text a person might type, line breaks and non-ASCII included; surrogates cannot be encoded at all.
free_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(" \t\n\r"),
                    max_size=120)
names = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
statuses = st.sampled_from(list(RecallStatus))


def reparse(msg: EmailMessage) -> bytes:
    """The bytes as they would travel (SMTP DATA) and be stored."""
    return msg.as_bytes(policy=policy.SMTP)


@settings(max_examples=150, deadline=None)
@given(original=message_ids, subject=free_text, sender=addresses, name=names,
       to=st.lists(addresses, max_size=4), cc=st.lists(addresses, max_size=3), own=message_ids)
def test_recall_instruction_round_trips(original, subject, sender, name, to, cc, own):
    instruction = RecallInstruction(original_message_id=original, original_subject=subject, sender=sender,
                                    sender_name=name, to=tuple(to), cc=tuple(cc), message_id=own)
    parsed = parse_recall_instruction(reparse(build_recall_message(instruction)))
    assert parsed is not None
    assert parsed.original_message_id == original
    assert parsed.original_subject == normalise_subject(subject)
    assert parsed.sender == sender
    # CPython's address parser keeps the folding space between two encoded-words of a long non-ASCII display
    # name (RFC 2047 6.2 says to drop it); the name is for people, so compare it without whitespace.
    assert parsed.sender_name.replace(" ", "") == normalise_subject(name).replace(" ", "")
    assert parsed.to == tuple(to) and parsed.cc == tuple(cc)
    assert parsed.action is RecallAction.DELETE and parsed.replacement is None
    assert parsed.message_id == own


@settings(max_examples=60, deadline=None)
@given(original=message_ids, subject=free_text, body=free_text, new_subject=free_text)
def test_replace_carries_the_replacement(original, subject, body, new_subject):
    replacement = EmailMessage()
    replacement["From"] = "alice@corp.example"
    replacement["Subject"] = normalise_subject(new_subject)
    replacement.set_content(body + "\n")
    instruction = RecallInstruction(original, subject, "alice@corp.example", "Alice",
                                    to=("bob@corp.example",), action=RecallAction.REPLACE, replacement=replacement)
    parsed = parse_recall_instruction(reparse(build_recall_message(instruction)))
    assert parsed is not None and parsed.action is RecallAction.REPLACE
    assert parsed.replacement is not None
    assert str(parsed.replacement["Subject"]) == normalise_subject(new_subject)
    assert parsed.replacement.get_content().replace("\r\n", "\n") == replacement.get_content()


def test_bcc_never_appears_in_headers():
    instruction = RecallInstruction("<o@x.example>", "s", "alice@corp.example", to=("bob@corp.example",),
                                    bcc=("carol@corp.example",))
    raw = reparse(build_recall_message(instruction))
    assert b"carol" not in raw
    assert instruction.recipients == ("bob@corp.example", "carol@corp.example")


def test_recall_body_is_the_sentence_people_read():
    msg = build_recall_message(RecallInstruction("<o@x.example>", "Salary   list\n", "alice@corp.example",
                                                 "Alice Smith", to=("dave@mail.example",)))
    assert str(msg["Subject"]) == "Recall: Salary list"
    assert msg.get_body(("plain",)).get_content() == 'Alice Smith would like to recall the message, "Salary list".\n'


@pytest.mark.parametrize("kwargs, error", [
    ({"action": RecallAction.REPLACE}, "needs the replacement"),
    ({"original_message_id": "has space"}, "not a Message-ID"),
    ({"original_message_id": "<>"}, "not a Message-ID"),
    ({"sender": "nobody"}, "not an address"),
])
def test_bad_instructions_are_refused(kwargs, error):
    base = dict(original_message_id="<o@x.example>", original_subject="s", sender="alice@corp.example",
                to=("bob@corp.example",))
    base.update(kwargs)
    with pytest.raises(RecallFormatError, match=error):
        build_recall_message(RecallInstruction(**base))


def _parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)


def test_ordinary_mail_is_no_recall_and_broken_recalls_say_why():
    plain = b"From: a@x.example\r\nTo: b@x.example\r\nSubject: Recall: lunch\r\n\r\nhi\r\n"
    assert parse_recall_instruction(plain) is None and not is_recall_instruction(plain)
    assert parse_report(plain) is None and parse_notice(plain) is None
    bad_action = (b"From: a@x.example\r\nSubject: Recall: x\r\n" + HEADER_MESSAGE_ID.encode() +
                  b": <o@x.example>\r\n" + HEADER_ACTION.encode() + b": shred\r\n\r\nx\r\n")
    with pytest.raises(RecallFormatError, match="unknown X-Recall-Action"):
        parse_recall_instruction(bad_action)
    no_part = bad_action.replace(b"shred", b"replace")
    with pytest.raises(RecallFormatError, match="message/rfc822"):
        parse_recall_instruction(no_part)


reports = st.builds(
    lambda oid, subj, rid, mode, rows: RecallReport(oid, normalise_subject(subj),
                                                    tuple(RecipientResult(a, s, normalise_subject(d))
                                                          for a, s, d in rows), rid, mode),
    message_ids, free_text, st.none() | message_ids, st.sampled_from(["cloud", "legacy"]),
    st.lists(st.tuples(addresses, statuses, free_text), max_size=6, unique_by=lambda t: t[0]))


@settings(max_examples=150, deadline=None)
@given(report=reports, to=addresses)
def test_report_round_trips(report, to):
    msg = build_report(report, to)
    assert str(msg["Subject"]) == "Message Recall Report: " + report.original_subject
    raw = reparse(msg)
    assert is_report(raw) and not is_recall_instruction(raw) and not is_notice(raw)
    assert parse_report(raw) == report
    text = _parse(raw).get_body(("plain",)).get_content()
    for row in report.results:
        assert f"{row.recipient}: {row.status.value}" in text


@settings(max_examples=150, deadline=None)
@given(oid=message_ids, subject=free_text, recipient=addresses, to=addresses, detail=free_text,
       status=statuses.filter(lambda s: s is not RecallStatus.PENDING))
def test_notice_round_trips(oid, subject, recipient, to, detail, status):
    notice = RecallNotice(oid, subject, recipient, status, detail)
    msg = build_notice(notice, to)
    assert str(msg["Subject"]).startswith("Recall Success: " if status.succeeded else "Recall Failure: ")
    raw = reparse(msg)
    assert is_notice(raw) and not is_recall_instruction(raw) and not is_report(raw)
    assert parse_notice(raw) == RecallNotice(oid, normalise_subject(subject), recipient, status,
                                             normalise_subject(detail))


def test_a_notice_cannot_be_pending():
    with pytest.raises(RecallFormatError):
        build_notice(RecallNotice("<o@x.example>", "s", "bob@corp.example", RecallStatus.PENDING),
                     "alice@corp.example")


def test_merge_applies_notices_and_never_reverts_to_pending():
    instruction = RecallInstruction("<o@x.example>", "s", "alice@corp.example",
                                    to=("bob@corp.example", "dave@mail.example"), message_id="<r@corp.example>")
    initial = pending_report(instruction, {"dave@mail.example": RecallStatus.EXTERNAL})
    assert initial.pending == ("bob@corp.example",) and not initial.complete
    notice = RecallNotice("<o@x.example>", "s", "bob@corp.example", RecallStatus.RECALLED)
    merged = merge_report(initial, [notice, initial])  # a late copy of the initial report changes nothing
    assert merged.statuses == {"bob@corp.example": RecallStatus.RECALLED,
                               "dave@mail.example": RecallStatus.EXTERNAL}
    assert merged.complete
    other = RecallNotice("<other@x.example>", "s", "bob@corp.example", RecallStatus.FAILED_READ)
    assert merge_report(initial, [other]) == initial


def test_a_notice_speaks_only_for_a_listed_recipient_and_never_over_a_cloud_report():
    instruction = RecallInstruction("<o@x.example>", "s", "alice@corp.example", to=("bob@corp.example",),
                                    message_id="<r@corp.example>")
    stranger = RecallNotice("<o@x.example>", "s", "mallory@corp.example", RecallStatus.RECALLED)
    legacy = pending_report(instruction, mode="legacy")
    assert merge_report(legacy, [stranger]) == legacy, "a non-recipient added a row to the report"
    cloud = pending_report(instruction, {"bob@corp.example": RecallStatus.FAILED_READ}, mode="cloud")
    says_recalled = RecallNotice("<o@x.example>", "s", "bob@corp.example", RecallStatus.RECALLED)
    assert merge_report(cloud, [says_recalled]) == cloud, "a recipient overrode the cloud server's verdict"


@settings(max_examples=100, deadline=None)
@given(report=reports, updates=st.lists(st.tuples(addresses, statuses), max_size=8))
def test_merge_keeps_every_recipient_and_ends_with_the_last_final_word(report, updates):
    merged = merge_report(report, [RecipientResult(a, s) for a, s in updates])
    expected = dict(report.statuses)
    for addr, status in updates:
        if addr in expected and expected[addr].final and not status.final:
            continue
        expected[addr] = status
    assert merged.statuses == expected
