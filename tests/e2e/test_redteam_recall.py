"""Outsider probes of two promises, against a running `recall-lab serve` over real sockets: only the sender can
recall (or speak for a recall's outcome), whatever the bytes look like, and nothing reaches a mailbox in someone
else's name.

Why these and not more of test_hostile_serve.py: that file hides the server's mark where a filter does not look.
These go through the front door as a logged-in user and abuse what the server itself vouches for or delivers on a
user's behalf: a legacy notice that is also a recall report (the server vouched for it as bob's notice, alice's
recall agent read it as the server's report, so bob could write carol's outcome), and the replacement of a
"replace" recall (delivered by the server straight into the recipients' mailboxes, past the submission check of
From). Each is tried in both recall modes where both process it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from recall_lab.fake_servers.domain import Endpoint
from recall_lab.fake_servers.recall import format as recall_format
from recall_lab.harness.recall_agent import ReportReader

from .conftest import Served, fetch_all, run_cli, start_serve
from .test_hostile_serve import Imap, Smtp
from .test_journey_cloud import send

ALICE, BOB, CAROL = "alice@corp.example", "bob@corp.example", "carol@corp.example"

_LAB = """\
[domains."corp.example"]
role = "organisation"
users = ["alice", "bob", "carol"]
[domains."corp.example".policies]
recall_mode = "{mode}"
[domains."mail.example"]
role = "external"
users = ["dave", "erin"]
"""


def _start(tmp_path_factory: pytest.TempPathFactory, mode: str) -> Iterator[Served]:
    home = tmp_path_factory.mktemp(f"redteam-{mode}")
    config = home / "lab.toml"
    config.write_text(_LAB.format(mode=mode))
    served = start_serve(home, "--config", str(config), name=mode)
    try:
        yield served
    finally:
        code, err = served.stop()
        assert code == 0 and "Traceback" not in err, f"serve exited {code}: {err}"


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One legacy-mode lab for the module: every test uses its own messages (fresh Message-IDs and subjects)."""
    yield from _start(tmp_path_factory, "legacy")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _start(tmp_path_factory, "cloud")


@pytest.fixture(params=["legacy", "cloud"])
def either(request: pytest.FixtureRequest) -> Served:
    return request.getfixturevalue(request.param)


def _submission(served: Served) -> int:
    return served.domain("corp.example")["submission"]["port"]


def _submit_as(served: Served, user: str, rcpt: str, data: bytes) -> str:
    """One message over submission, logged in as `user` (AUTH PLAIN), exact bytes; the final reply."""
    smtp = Smtp(_submission(served))
    try:
        token = base64.b64encode(f"\0{user}\0{user.split('@')[0]}-password".encode())
        assert smtp.cmd(b"EHLO client.example").startswith("250")
        assert smtp.cmd(b"AUTH PLAIN " + token).startswith("235")
        return smtp.mail(b"client.example", f"<{user}>".encode(), f"<{rcpt}>".encode(), data)
    finally:
        smtp.close()


def _messages(served: Served, user: str, folder: str = "INBOX") -> list[bytes]:
    client = served.imap(user)
    try:
        return fetch_all(client, folder)
    finally:
        client.logout()


def _parsed(raw: bytes) -> EmailMessage:
    return message_from_bytes(raw, policy=email_policy.default)  # type: ignore[return-value]


def _with_field(messages: list[bytes], name: str, value: str) -> list[bytes]:
    return [raw for raw in messages if str(_parsed(raw).get(name, "")).strip() == value]


# --- 1. a notice that is also a report ---------------------------------------------------------------------


def _notice_that_is_a_report(original: str, recall_id: str, extra: dict[str, str]) -> bytes:
    """bob's legacy notice for himself (what the server rightly vouches for), which also carries a report of the
    whole recall: every recipient, carol included, "recalled"."""
    report = recall_format.RecallReport(
        original_message_id=original, original_subject="Q3", recall_message_id=recall_id, mode="legacy",
        results=(recall_format.RecipientResult(CAROL, recall_format.RecallStatus.RECALLED),
                 recall_format.RecipientResult(BOB, recall_format.RecallStatus.RECALLED)))
    msg = recall_format.build_report(report, to=ALICE, from_addr=BOB)
    msg[recall_format.HEADER_NOTICE] = "success"
    msg[recall_format.HEADER_RECIPIENT] = BOB
    msg[recall_format.HEADER_STATUS] = "recalled"
    for name, value in extra.items():
        msg[name] = value
    return msg.as_bytes(policy=email_policy.SMTP)


@pytest.mark.parametrize("extra", [{}, {recall_format.HEADER_ACTION: "delete"}], ids=["notice+report",
                                                                                 "notice+report+recall"])
def test_a_recipient_cannot_write_the_senders_report_for_others(legacy: Served, extra: dict[str, str]) -> None:
    """Legacy mode: alice recalls a message to bob and carol; nobody has acted yet. bob's notice, carrying a
    report that says carol's copy was recalled too, must not be vouched for, and alice's recall agent must still
    show carol as pending."""
    subject = f"Q3 report {len(extra)}"
    mid = send(legacy, ALICE, "--to", BOB, "--to", CAROL, "--subject", subject, "--body", "figures")
    result = run_cli("recall", "--endpoints", str(legacy.endpoints_file), "--user", ALICE, "--message-id", mid,
                     "--wait", "0.2", "--json")
    assert result.returncode == 0, result.stderr
    statuses = {r["recipient"]: r["status"] for r in json.loads(result.stdout)["recipients"]}
    assert statuses == {BOB: "pending", CAROL: "pending"}
    [recall] = _with_field(_messages(legacy, BOB), recall_format.HEADER_MESSAGE_ID, mid)
    recall_id = str(_parsed(recall)["Message-ID"]).strip()

    reply = _submit_as(legacy, BOB, ALICE, _notice_that_is_a_report(mid, recall_id, extra))
    assert reply.startswith("250"), reply  # delivered as ordinary mail, before the 250
    [forged] = [raw for raw in _with_field(_messages(legacy, ALICE), recall_format.HEADER_MESSAGE_ID, mid)
                if _parsed(raw).get(recall_format.HEADER_NOTICE) is not None]
    assert recall_format.verified_by(forged) is None, "the server vouched for a notice that is also a report"

    imap = legacy.domain("corp.example")["imap"]
    reader = ReportReader(Endpoint(imap["host"], imap["port"]), ALICE, "alice-password", mid, recall_id, timeout=10)
    merged = reader.wait(0.3, until_complete=False)
    assert merged is not None
    assert merged.statuses[CAROL] is recall_format.RecallStatus.PENDING, merged.statuses
    assert merged.statuses[BOB] is recall_format.RecallStatus.PENDING, merged.statuses


# --- 2. the replacement of a replace recall -----------------------------------------------------------------

#: Replacements bob might hand the server to deliver for him: each names alice as its author to some reader.
_REPLACEMENTS = {
    "from-alice": b"From: Alice <alice@corp.example>\r\n",
    "sender-alice": b"From: bob@corp.example\r\nSender: alice@corp.example\r\n",
    "two-froms": b"From: bob@corp.example\r\nFrom: alice@corp.example\r\n",
    "reads-two-ways": b"From: alice@corp.example <bob@corp.example>\r\n",
    # Python 3.11.7 re-folds this Subject into a line of its own: "From: alice@corp.example" (CVE-2024-6923)
    "folded-injection": b"From: bob@corp.example\r\nSubject: " + b"x" * 80
                        + b" =?utf-8?q?a=0D=0AFrom:_alice@corp.example?=\r\n",
}


def _refolding_forges_a_field() -> bool:
    """Whether this Python writes the decoded line end of "folded-injection" into a line of its own (Debian's
    3.11 carries the CVE-2024-6923 fix: there the replacement is bob's own, and may be delivered)."""
    msg = _parsed(_REPLACEMENTS["folded-injection"] + b"\r\nbody\r\n")
    return b"\r\nFrom: alice@corp.example" in msg.as_bytes(policy=email_policy.SMTP)


@pytest.mark.parametrize("variant", list(_REPLACEMENTS))
def test_a_replacement_is_delivered_only_in_the_recallers_own_name(either: Served, variant: str,
                                                                    tmp_path: Path) -> None:
    """bob recalls his own message to carol with a replacement written as alice: the server must not deliver
    it (cloud) or vouch for a recall carrying it (legacy); carol's mailbox gets no message in alice's name."""
    forged = variant != "folded-injection" or _refolding_forges_a_field()
    subject = f"Budget {variant}"
    mid = send(either, BOB, "--to", CAROL, "--subject", subject, "--body", "draft")
    replacement_id = f"<replacement-{variant}@corp.example>"
    head = _REPLACEMENTS[variant]
    if b"Subject:" not in head:
        head += f"Subject: {subject} (final)\r\n".encode()
    path = tmp_path / "replacement.eml"
    path.write_bytes(head + f"To: {CAROL}\r\nMessage-ID: {replacement_id}\r\n\r\nPay the bearer.\r\n".encode())
    result = run_cli("recall", "--endpoints", str(either.endpoints_file), "--user", BOB, "--message-id", mid,
                     "--replace-with", str(path), "--wait", "0.5", "--json")
    assert result.returncode == 0, result.stderr

    inbox = _messages(either, CAROL)
    if forged:
        assert _with_field(inbox, "Message-ID", replacement_id) == [], "the server delivered the forged replacement"
    ours = [raw for raw in inbox if subject in str(_parsed(raw).get("Subject", ""))
            or str(_parsed(raw).get("Message-ID", "")).strip() in (mid, replacement_id)]
    assert ours, "neither bob's original nor his recall is in carol's INBOX"
    for raw in ours:  # the module's lab is shared: alice's own mail to carol from other tests is hers
        msg = _parsed(raw)
        authors = [a.addr_spec.lower() for name in ("From", "Sender") for field in msg.get_all(name, [])
                   for a in field.addresses]
        assert ALICE not in authors, raw[:400]
    if forged:
        recalls = _with_field(inbox, recall_format.HEADER_MESSAGE_ID, mid)
        assert all(recall_format.verified_by(raw) is None for raw in recalls), "the server vouched for the recall"
        assert _with_field(inbox, "Message-ID", mid), "bob's original was recalled by a refused recall"


def test_a_replacement_in_the_senders_own_name_still_works(cloud: Served, tmp_path: Path) -> None:
    """The legitimate use, so the refusals above are not a refusal of everything."""
    mid = send(cloud, BOB, "--to", CAROL, "--subject", "Budget plain", "--body", "draft")
    path = tmp_path / "replacement.eml"
    path.write_bytes(b"From: Bob <bob@corp.example>\r\nTo: carol@corp.example\r\nSubject: Budget (final)\r\n"
                     b"Message-ID: <replacement-plain@corp.example>\r\n\r\nThe final budget.\r\n")
    result = run_cli("recall", "--endpoints", str(cloud.endpoints_file), "--user", BOB, "--message-id", mid,
                     "--replace-with", str(path), "--wait", "5", "--json")
    assert result.returncode == 0, result.stderr
    assert {r["recipient"]: r["status"] for r in json.loads(result.stdout)["recipients"]} == {CAROL: "recalled"}
    inbox = _messages(cloud, CAROL)
    assert _with_field(inbox, "Message-ID", mid) == []
    assert len(_with_field(inbox, "Message-ID", "<replacement-plain@corp.example>")) == 1


# --- 3. identities on the wire: SASL authorization identities, envelope and header ----------------------------


def test_smtp_auth_plain_with_another_authzid_never_acts_as_alice(either: Served) -> None:
    """AUTH PLAIN "alice\\0bob\\0bob's password": whatever the server makes of the authorization identity, the
    session is bob's, never alice's."""
    smtp = Smtp(_submission(either))
    try:
        assert smtp.cmd(b"EHLO client.example").startswith("250")
        token = base64.b64encode(f"{ALICE}\0{BOB}\0bob-password".encode())
        smtp.cmd(b"AUTH PLAIN " + token)
        reply = smtp.cmd(b"MAIL FROM:<alice@corp.example>")
        assert reply.startswith(("553 5.7.1", "530 5.7.0")), reply
    finally:
        smtp.close()


def test_imap_authenticate_plain_with_another_authzid_is_refused(either: Served) -> None:
    imap = Imap(either.imap_port("corp.example"))
    try:
        token = base64.b64encode(f"{ALICE}\0{BOB}\0bob-password".encode()).decode()
        tagged, _ = imap.cmd(f"AUTHENTICATE PLAIN {token}")
        assert b" NO " in tagged, tagged
        tagged, _ = imap.cmd("SELECT INBOX")
        assert b" OK " not in tagged, tagged
    finally:
        imap.close()


@pytest.mark.parametrize("separator", [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r\n.\r"],
                         ids=["LF.LF", "CR.CR", "CRLF.LF", "LF.CRLF", "CRLF.CR"])
def test_smuggling_a_second_message_through_submission_is_refused(either: Served, separator: bytes) -> None:
    """Logged in as bob, an end-of-data look-alike followed by a second transaction in alice's name: the whole
    DATA is one refused message (550 5.6.0), and nothing in alice's name is delivered."""
    tag = f"smuggled-{separator.hex()}"
    data = (b"From: bob@corp.example\r\nTo: carol@corp.example\r\nSubject: first\r\n\r\nbody" + separator
            + b"MAIL FROM:<alice@corp.example>\r\nRCPT TO:<carol@corp.example>\r\nDATA\r\n"
            + b"From: alice@corp.example\r\nSubject: " + tag.encode() + b"\r\n\r\nx\r\n.\r\n")
    reply = _submit_as(either, BOB, CAROL, data)
    assert reply.startswith("550 5.6.0 "), reply
    assert _with_field(_messages(either, CAROL), "Subject", tag) == []
