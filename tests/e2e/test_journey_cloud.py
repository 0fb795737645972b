"""The main user journey against the default (cloud) lab: serve, send, read with real clients, recall.

Each step is what a person types; each assertion is what they would check with their own mail client,
done here with curl, neomutt and imapclient over the lab's real sockets.
"""

from __future__ import annotations

import json
import re
from email import message_from_bytes
from email import policy as email_policy

import pytest

from .conftest import fetch_all, message_ids, run_cli
from .peers import curl_imap, neomutt_read_first

MESSAGE_ID = re.compile(r"^<[^<>@\s]+@corp\.example>$")


def send(served, sender: str, *rest: str) -> str:
    result = run_cli("send", "--endpoints", str(served.endpoints_file), "--from", sender, *rest)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    mid = result.stdout.strip()
    assert MESSAGE_ID.match(mid), result.stdout
    return mid


def recall(served, mid: str, *extra: str):
    return run_cli("recall", "--endpoints", str(served.endpoints_file), "--user", "alice@corp.example",
                   "--message-id", mid, "--wait", "5", *extra)


def report_json(served, subject: str) -> dict:
    """The machine-readable part of alice's 'Message Recall Report: <subject>'."""
    alice = served.imap("alice@corp.example")
    try:
        for raw in fetch_all(alice):
            msg = message_from_bytes(raw, policy=email_policy.default)
            if msg["Subject"] == f"Message Recall Report: {subject}":
                for part in msg.walk():
                    if part.get_content_type() == "application/json":
                        return json.loads(part.get_content())
    finally:
        alice.logout()
    raise AssertionError(f"no recall report for {subject!r} in alice's INBOX")


def test_endpoints_line_and_file_are_the_documented_shape(lab):
    on_disk = json.loads(lab.endpoints_file.read_text())
    assert on_disk == lab.endpoints
    domains = lab.endpoints["domains"]
    assert set(domains) == {"corp.example", "mail.example"}
    assert domains["corp.example"]["role"] == "organisation"
    assert domains["mail.example"]["role"] == "external"
    assert domains["corp.example"]["users"] == {
        "alice@corp.example": "alice-password", "bob@corp.example": "bob-password",
        "carol@corp.example": "carol-password"}
    assert domains["mail.example"]["users"] == {"dave@mail.example": "dave-password",
                                                "erin@mail.example": "erin-password"}
    ports = [info[svc]["port"] for info in domains.values() for svc in ("imap", "submission", "mx")]
    assert len(set(ports)) == 6 and all(p > 0 for p in ports)
    assert all(info[svc]["host"] == "127.0.0.1" for info in domains.values() for svc in ("imap", "submission", "mx"))


@pytest.fixture(params=["lab", "dovecot"])
def org_lab(request, serve):
    """The default lab, with the organisation on the lab's own server and then on a real Dovecot
    (`serve --backend corp.example=dovecot`): the journey must read the same on both."""
    if request.param == "dovecot":
        from recall_lab.harness.backends import lmtp_available

        if not lmtp_available():
            pytest.skip("Dovecot with LMTP is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
        served = serve("--backend", "corp.example=dovecot")
        assert served.domain("corp.example")["backend"] == "dovecot"
        return served
    return serve()


def test_send_read_with_curl_and_neomutt_then_recall(org_lab, tmp_path):
    lab = org_lab
    mid = send(lab, "alice@corp.example", "--to", "bob@corp.example", "--to", "dave@mail.example",
               "--cc", "carol@corp.example", "--subject", "Q3 numbers", "--body", "draft figures, do not forward")
    corp_port = lab.imap_port("corp.example")

    # carol reads it with curl (imap://, fetch by UID: this does not mark it read? curl FETCHes BODY[]: it does)
    listing = curl_imap("carol@corp.example", "carol-password", f"imap://127.0.0.1:{corp_port}/INBOX?ALL")
    assert listing.stdout.strip() == "* SEARCH 1", listing
    body = curl_imap("carol@corp.example", "carol-password", f"imap://127.0.0.1:{corp_port}/INBOX;UID=1")
    assert body.returncode == 0, body.stderr
    assert f"Message-ID: {mid}" in body.stdout and "draft figures, do not forward" in body.stdout

    # bob opens it in neomutt: the body reaches his pager and \Seen lands on the server
    shown = neomutt_read_first(tmp_path, "bob@corp.example", "bob-password", "127.0.0.1", corp_port)
    assert "Q3 numbers" in shown and "draft figures, do not forward" in shown
    bob = lab.imap("bob@corp.example")
    uid = message_ids(bob)[mid]
    assert b"\\Seen" in bob.get_flags([uid])[uid]
    # dave at the other provider has it too, via real SMTP between the domains
    dave = lab.imap("dave@mail.example")
    assert mid in message_ids(dave)

    result = recall(lab, mid)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert out.splitlines()[0] == f'Message Recall Report: "Q3 numbers" {mid} (cloud)'
    assert re.search(r"^\s+bob@corp\.example\s+recalled-after-read\s", out, re.M), out
    assert re.search(r"^\s+carol@corp\.example\s+recalled(-after-read)?\s", out, re.M), out
    assert re.search(r"^\s+dave@mail\.example\s+external\s", out, re.M), out

    # the server state, read back: gone at corp.example (every folder), still at mail.example
    for user in ("bob@corp.example", "carol@corp.example"):
        client = lab.imap(user)
        for folder in ("INBOX", "Trash"):
            assert mid not in message_ids(client, folder), (user, folder)
        client.logout()
    dave_mail = {m["Message-ID"]: m for m in
                 (message_from_bytes(r, policy=email_policy.default) for r in fetch_all(dave))}
    assert mid in dave_mail, "the external provider knows nothing of recalls: the original stays"
    recall_msgs = [m for m in dave_mail.values() if m["Subject"] == "Recall: Q3 numbers"]
    assert len(recall_msgs) == 1
    assert recall_msgs[0]["X-Recall-Message-ID"] == mid
    assert 'would like to recall the message, "Q3 numbers".' in recall_msgs[0].get_body(("plain",)).get_content()
    dave.logout()
    bob.logout()

    statuses = {r["recipient"]: r["status"] for r in report_json(lab, "Q3 numbers")["recipients"]}
    assert statuses["bob@corp.example"] == "recalled-after-read"
    assert statuses["dave@mail.example"] == "external"


def test_recall_pushes_expunge_to_an_idling_client(lab):
    mid = send(lab, "alice@corp.example", "--to", "bob@corp.example", "--subject", "Lunch", "--body", "noon?")
    bob = lab.imap("bob@corp.example")
    bob.select_folder("INBOX")
    uid_of = message_ids(bob)
    assert mid in uid_of
    bob.select_folder("INBOX")
    bob.idle()
    try:
        result = recall(lab, mid)
        assert result.returncode == 0, result.stderr
        assert re.search(r"^\s+bob@corp\.example\s+recalled\s", result.stdout, re.M), result.stdout
        pushed = []
        while not any(r[1] == b"EXPUNGE" for r in pushed if len(r) > 1):
            got = bob.idle_check(timeout=5)  # returns at once when the server pushes; else fails below
            assert got, f"no EXPUNGE pushed during IDLE; saw {pushed}"
            pushed += got
    finally:
        bob.idle_done()
    assert mid not in message_ids(bob)
    bob.logout()


def test_recall_and_replace(lab, tmp_path):
    mid = send(lab, "alice@corp.example", "--to", "bob@corp.example", "--subject", "Offer",
               "--body", "salary 100")
    replacement = tmp_path / "fixed.eml"
    replacement.write_text("From: alice@corp.example\nTo: bob@corp.example\nSubject: Offer (corrected)\n"
                           "Message-ID: <offer-fixed@corp.example>\n\nsalary 90\n")
    result = recall(lab, mid, "--replace-with", str(replacement), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["original_message_id"] == mid and report["mode"] == "cloud"
    assert {r["recipient"]: r["status"] for r in report["recipients"]} == {"bob@corp.example": "recalled"}
    bob = lab.imap("bob@corp.example")
    inbox = message_ids(bob)
    assert mid not in inbox
    assert "<offer-fixed@corp.example>" in inbox
    assert b"salary 90" in fetch_all(bob)[-1]
    bob.logout()


def test_a_second_user_cannot_recall_alices_message(lab):
    mid = send(lab, "alice@corp.example", "--to", "bob@corp.example", "--subject", "Mine", "--body", "x")
    result = run_cli("recall", "--endpoints", str(lab.endpoints_file), "--user", "carol@corp.example",
                     "--message-id", mid, "--wait", "2")
    assert result.returncode != 0
    assert "carol@corp.example" in result.stderr and len(result.stderr.splitlines()) == 1
    bob = lab.imap("bob@corp.example")
    assert mid in message_ids(bob)
    bob.logout()


def test_recall_report_columns_line_up(lab):
    """QA F8 (fixed 07:29 UTC): the status column was not padded."""
    mid = send(lab, "alice@corp.example", "--to", "bob@corp.example", "--to", "dave@mail.example",
               "--subject", "Columns", "--body", "x")
    bob = lab.imap("bob@corp.example")
    uid = message_ids(bob)[mid]
    bob.select_folder("INBOX")
    bob.add_flags([uid], [b"\\Seen"])  # read: the status becomes the long `recalled-after-read`
    bob.logout()
    result = recall(lab, mid)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines()[1:] if line.startswith("  ") and "@" in line]
    assert len(rows) == 2, result.stdout
    detail_at = {re.match(r"^\s+\S+\s+\S+\s+", row).end() for row in rows}
    assert len(detail_at) == 1, "the detail column starts at the same place on every line:\n" + result.stdout
