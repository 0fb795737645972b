"""Forged recalls sent with swaks, as an attacker or a careless colleague would: they delete nothing.

A recall is honoured only from the original's sender through authenticated submission; X-Recall-* headers
written by hand, or arriving from another provider through MX, make an ordinary message.
"""

from __future__ import annotations

import pytest

from .conftest import fetch_all, message_ids
from .peers import swaks
from .test_journey_cloud import send


@pytest.mark.parametrize("forger", ["dave-through-mx", "carol-through-submission"])
def test_forged_recall_deletes_nothing(lab, forger):
    mid = send(lab, "alice@corp.example", "--to", "bob@corp.example", "--subject", "Payroll", "--body", "x")
    corp = lab.domain("corp.example")
    headers = ["--header", "Subject: Recall: Payroll", "--header", f"X-Recall-Message-ID: {mid}",
               "--header", "X-Recall-Action: delete", "--body", "alice would like to recall the message"]
    if forger == "dave-through-mx":
        result = swaks("--server", "127.0.0.1", "--port", str(corp["mx"]["port"]), "--from", "dave@mail.example",
                       "--to", "bob@corp.example", *headers)
    else:
        result = swaks("--server", "127.0.0.1", "--port", str(corp["submission"]["port"]),
                       "--auth", "PLAIN", "--auth-user", "carol@corp.example", "--auth-password", "carol-password",
                       "--from", "carol@corp.example", "--to", "bob@corp.example", *headers)
    assert result.returncode == 0, result.stdout[-2000:]
    bob = lab.imap("bob@corp.example")
    inbox = message_ids(bob)
    assert mid in inbox, "a forged recall must not delete the original"
    forged = [raw for raw in fetch_all(bob) if b"Subject: Recall: Payroll" in raw]
    assert len(forged) == 1, "the forged recall arrives as ordinary mail"
    assert b"X-Recall-Verified" not in forged[0], "the server's mark of trust must not be on a forged recall"
    bob.logout()
