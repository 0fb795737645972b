"""`recall-lab serve --store maildir:DIR` killed with SIGKILL half-way through a cloud recall, then started again:
the recall is finished (every recipient's copy gone) and the sender has exactly one report, complete and right.

How the kill lands half-way every time: the lab config sets `recall_step_delay`, so the recall pauses after
the first recipient's mailbox; the test watches both recipients' INBOXes with IMAP IDLE and kills the server
as soon as one of them hears its EXPUNGE. Before the restart it reads the Maildir itself to prove the kill
left one copy removed and the other not.
"""

from __future__ import annotations

import contextlib
import signal
import smtplib
import subprocess
import time
from email.message import EmailMessage
from pathlib import Path

import imapclient

from recall_lab.fake_servers.recall.format import RecallStatus, is_report, parse_report
from recall_lab.fake_servers.store import MaildirStore

from .conftest import Served, cli_command, cli_env, fetch_all, message_ids, start_serve

ALICE, BOB, CAROL, DAVE = "alice@corp.example", "bob@corp.example", "carol@corp.example", "dave@mail.example"
ORIGINAL = "<quarterly-crash@corp.example>"
SLOW_RECALL = """
[domains."corp.example"]
role = "organisation"
users = ["alice", "bob", "carol"]
[domains."corp.example".policies]
recall_step_delay = 120
[domains."mail.example"]
role = "external"
users = ["dave", "erin"]
"""


def submit_original(served: Served) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = ALICE, f"{BOB}, {CAROL}, {DAVE}", "Q3", ORIGINAL
    msg.set_content("the numbers\n")
    sub = served.domain("corp.example")["submission"]
    with smtplib.SMTP(sub["host"], sub["port"], local_hostname="corp.example", timeout=10) as smtp:
        smtp.login(ALICE, served.domain("corp.example")["users"][ALICE])
        smtp.send_message(msg)


def first_expunge(watchers: dict[str, imapclient.IMAPClient], timeout: float = 30.0) -> str:
    """The user whose IDLE session hears an EXPUNGE first (waiting on the sessions, not on a clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for user, client in watchers.items():
            if any(len(r) > 1 and r[1] == b"EXPUNGE" for r in client.idle_check(timeout=0.2)):
                return user
    raise AssertionError(f"no recipient's copy was removed within {timeout} s")


def copies_on_disk(root: Path) -> dict[str, int]:
    store = MaildirStore(root / "corp.example" / "mail")
    try:
        return {user: len(store.find_by_message_id(user, ORIGINAL)) for user in (BOB, CAROL)}
    finally:
        store.close()


def test_serve_killed_mid_recall_finishes_it_after_restart(tmp_path: Path) -> None:
    root = tmp_path / "lab"
    config = tmp_path / "slow-recall.toml"
    config.write_text(SLOW_RECALL)
    first = start_serve(tmp_path, "--store", f"maildir:{root}", "--config", str(config), name="first")
    recall = None
    watchers: dict[str, imapclient.IMAPClient] = {}
    try:
        submit_original(first)
        watchers = {user: first.imap(user) for user in (BOB, CAROL)}
        for client in watchers.values():
            assert ORIGINAL in message_ids(client)
            client.select_folder("INBOX")
            client.idle()
        recall = subprocess.Popen([*cli_command(), "recall", "--endpoints", str(first.endpoints_file),
                                   "--user", ALICE, "--message-id", ORIGINAL, "--wait", "60"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                  env=cli_env(), text=True)
        gone_first = first_expunge(watchers)
        journal = list((root / "corp.example" / "mail" / ".recall-lab-operations").glob("*.json"))
        assert len(journal) == 1, "the recall's decision is on disk before its first step"
        first.proc.send_signal(signal.SIGKILL)
        code, _err = first.stop()
        assert code == -signal.SIGKILL
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.stop()
        if recall is not None:
            recall.kill()
            recall.communicate(timeout=15)
        for client in watchers.values():
            with contextlib.suppress(Exception):
                client.shutdown()

    other = CAROL if gone_first == BOB else BOB
    assert copies_on_disk(root) == {gone_first: 0, other: 1}, "the kill landed half-way"

    second = start_serve(tmp_path, "--store", f"maildir:{root}", name="second")
    try:
        for user in (BOB, CAROL):
            assert ORIGINAL not in message_ids(second.imap(user)), user
        reports = [parse_report(raw) for raw in fetch_all(second.imap(ALICE)) if is_report(raw)]
        assert len(reports) == 1, "exactly one report: the one decided before the first copy went"
        assert reports[0].original_message_id == ORIGINAL
        assert reports[0].statuses == {BOB: RecallStatus.RECALLED, CAROL: RecallStatus.RECALLED,
                                       DAVE: RecallStatus.EXTERNAL}
        assert list((root / "corp.example" / "mail" / ".recall-lab-operations").glob("*.json")) == []
    finally:
        code, err = second.stop()
    assert code == 0 and "Traceback" not in err, err
