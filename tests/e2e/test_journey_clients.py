"""Recall as recipients with real programs meet it: a laptop that syncs with mbsync, and a legacy lab where
the server only delivers the recall and no client has acted yet.
"""

from __future__ import annotations

import re
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path

from tests.peers.mbsync_helpers import run_mbsync, write_config
from tests.peers.servers import ImapEndpoint

from .conftest import fetch_all, message_ids
from .peers import neomutt_send
from .test_journey_cloud import recall, send

LEGACY_LAB = """\
[domains."corp.example"]
role = "organisation"
users = ["alice", "bob", "carol"]
[domains."corp.example".policies]
recall_mode = "legacy"
[domains."mail.example"]
role = "external"
users = ["dave", "erin"]
"""


def _mbsync(home: Path, port: int) -> None:
    """One mbsync run of bob's INBOX into home/Mail, configured and run as the peer tests do."""
    config = home / "mbsyncrc"
    write_config(config, ImapEndpoint("recall-lab", "127.0.0.1", port, "bob@corp.example", "bob-password"),
                 home / "Mail")
    run_mbsync(config, home, timeout=30)


def _local_message_ids(home: Path) -> set[str]:
    ids = set()
    for sub in ("cur", "new"):
        for f in (home / "Mail" / "INBOX" / sub).glob("*"):
            msg = message_from_bytes(f.read_bytes(), policy=email_policy.default)
            ids.add(msg["Message-ID"])
    return ids


def test_laptop_synced_with_mbsync_loses_its_copy_at_the_next_sync(lab, tmp_path):
    """The offline-desktop condition with a real client: the copy stays on the laptop until it syncs."""
    mid = send(lab, "alice@corp.example", "--to", "bob@corp.example", "--subject", "Salaries",
               "--body", "the whole list")
    port = lab.imap_port("corp.example")
    home = tmp_path / "laptop"
    (home / "Mail").mkdir(parents=True)
    _mbsync(home, port)
    assert mid in _local_message_ids(home)

    result = recall(lab, mid)  # bob's laptop is "offline": it hears nothing
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+bob@corp\.example\s+recalled\s", result.stdout, re.M), result.stdout
    assert mid in _local_message_ids(home), "an offline cache keeps its copy until it syncs"

    _mbsync(home, port)
    assert mid not in _local_message_ids(home), "the next sync drops what the server expunged"


def test_legacy_lab_delivers_the_recall_and_reports_pending(serve, tmp_path):
    config = tmp_path / "legacy.toml"
    config.write_text(LEGACY_LAB)
    served = serve("--config", str(config))
    mid = send(served, "alice@corp.example", "--to", "bob@corp.example", "--to", "dave@mail.example",
               "--subject", "Legacy", "--body", "only a client can delete this")
    result = recall(served, mid, "--wait", "0.2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.splitlines()[0] == f'Message Recall Report: "Legacy" {mid} (legacy)'
    assert re.search(r"^\s+bob@corp\.example\s+pending\s", out, re.M), out
    assert re.search(r"^\s+dave@mail\.example\s+external\s", out, re.M), out
    assert out.splitlines()[-1] == "still pending: bob@corp.example"

    bob = served.imap("bob@corp.example")
    assert mid in message_ids(bob), "legacy: the server deletes nothing"
    recalls = [message_from_bytes(raw, policy=email_policy.default) for raw in fetch_all(bob)]
    recalls = [m for m in recalls if m["X-Recall-Message-ID"] == mid]
    assert len(recalls) == 1
    assert recalls[0]["Subject"] == "Recall: Legacy"
    assert recalls[0]["X-Recall-Verified"] == "corp.example", "the server vouches for it, so bob's client may act"
    bob.logout()


def test_a_message_sent_with_neomutt_can_be_recalled(lab, tmp_path):
    """A real mail program sends; the server's Sent copy is what the recall finds."""
    corp = lab.domain("corp.example")
    neomutt_send(tmp_path, "alice@corp.example", "alice-password", "127.0.0.1", corp["submission"]["port"],
                 "bob@corp.example", "Sent by neomutt", "typed in a real client\n")
    bob = lab.imap("bob@corp.example")
    received = [message_from_bytes(raw, policy=email_policy.default) for raw in fetch_all(bob)]
    assert [m["Subject"] for m in received] == ["Sent by neomutt"]
    mid = received[0]["Message-ID"]
    alice = lab.imap("alice@corp.example")
    assert mid in message_ids(alice, "Sent"), "the submission server files the Sent copy"
    alice.logout()
    result = recall(lab, mid)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+bob@corp\.example\s+recalled\s", result.stdout, re.M), result.stdout
    assert message_ids(bob) == {}
    bob.logout()
