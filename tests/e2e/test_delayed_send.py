"""Delayed send, the alternative the article recommends, as a user of `serve` meets it: the message waits in
the Outbox; deleting it there (here with curl) cancels it; otherwise it leaves when the window ends.
"""

from __future__ import annotations

import re

from .conftest import message_ids
from .peers import curl_imap
from .test_journey_cloud import recall, send

DELAYED_LAB = """\
[domains."corp.example"]
role = "organisation"
users = ["alice", "bob", "carol"]
[domains."corp.example".policies]
delayed_send_seconds = {window}
[domains."mail.example"]
role = "external"
users = ["dave", "erin"]
"""


def delayed_lab(serve, tmp_path, window: float):
    config = tmp_path / "delayed.toml"
    config.write_text(DELAYED_LAB.format(window=window))
    return serve("--config", str(config))


def test_cancel_in_the_outbox_with_curl_and_the_rest_leaves_after_the_window(serve, tmp_path):
    lab = delayed_lab(serve, tmp_path, 3)
    cancelled = send(lab, "alice@corp.example", "--to", "bob@corp.example", "--subject", "Oops", "--body", "no")
    kept = send(lab, "alice@corp.example", "--to", "bob@corp.example", "--subject", "Fine", "--body", "yes")
    alice = lab.imap("alice@corp.example")
    outbox = message_ids(alice, "Outbox")
    assert set(outbox) == {cancelled, kept}, "both wait in alice's Outbox"
    assert message_ids(alice, "Sent") == {}
    port = lab.imap_port("corp.example")
    url = f"imap://127.0.0.1:{port}/Outbox"
    stored = curl_imap("alice@corp.example", "alice-password", url, "-X",
                       f"UID STORE {outbox[cancelled]} +FLAGS (\\Deleted)")
    assert stored.returncode == 0, stored.stderr
    expunged = curl_imap("alice@corp.example", "alice-password", url, "-X", "EXPUNGE")
    assert expunged.returncode == 0 and "EXPUNGE" in expunged.stdout, expunged

    bob = lab.imap("bob@corp.example")
    bob.select_folder("INBOX")
    bob.idle()
    try:
        arrived = []
        while not any(len(r) > 1 and r[1] == b"EXISTS" and r[0] > 0 for r in arrived):
            got = bob.idle_check(timeout=15)  # the window is 3 s: "Fine" is pushed when it ends
            assert got, "nothing arrived after the delayed-send window"
            arrived += got
    finally:
        bob.idle_done()
    # "Oops" was due before "Fine": had the cancel failed, it would be here already
    assert set(message_ids(bob)) == {kept}
    assert set(message_ids(alice, "Sent")) == {kept}
    assert message_ids(alice, "Outbox") == {}
    alice.logout()
    bob.logout()


def test_recall_of_a_held_message_discards_it(serve, tmp_path):
    """QA F10 (fixed 08:01 UTC): the agent looked for the original only in Sent."""
    lab = delayed_lab(serve, tmp_path, 600)
    mid = send(lab, "alice@corp.example", "--to", "bob@corp.example", "--to", "dave@mail.example",
               "--subject", "Held", "--body", "x")
    result = recall(lab, mid)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+bob@corp\.example\s+recalled\s", result.stdout, re.M), result.stdout
    assert re.search(r"^\s+dave@mail\.example\s+recalled\s", result.stdout, re.M), result.stdout
    alice = lab.imap("alice@corp.example")
    assert mid not in message_ids(alice, "Outbox")
    alice.logout()
