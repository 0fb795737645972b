"""Debian's curl as an IMAP client: LIST, EXAMINE, fetch by UID, SEARCH, APPEND with -T, a wrong password.

Each case runs against Dovecot and against recall-lab (the `imap_server` fixture), with the same assertions.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import require_program
from .mail_helpers import flags_by_subject, make_message, seed
from .servers import ImapEndpoint

CURL_LOGIN_DENIED = 67  # curl's CURLE_LOGIN_DENIED


def curl(ep: ImapEndpoint, path: str, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    binary = require_program("curl")
    return subprocess.run(
        [binary, "--silent", "--show-error", "--max-time", "15",
         "-u", f"{ep.user}:{password if password is not None else ep.password}",
         f"{ep.url}/{path}", *args],
        capture_output=True, text=True, timeout=20,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"curl exit {result.returncode}: {result.stderr}"
    return result.stdout


def test_list_shows_default_mailboxes(imap_server: ImapEndpoint) -> None:
    lines = ok(curl(imap_server, "")).splitlines()
    by_name = {line.rsplit(" ", 1)[-1].strip('"'): line for line in lines if line.startswith("* LIST")}
    assert set(by_name) >= {"INBOX", "Sent", "Drafts", "Trash"}, lines
    assert "\\Sent" in by_name["Sent"] and "\\Trash" in by_name["Trash"] and "\\Drafts" in by_name["Drafts"]
    assert all('"/"' in line for line in by_name.values())


def test_examine_reports_counts_and_is_read_only(imap_server: ImapEndpoint) -> None:
    seed(imap_server, [("one", "first", ()), ("two", "second", ("\\Seen",))])
    out = ok(curl(imap_server, "INBOX", "-X", "EXAMINE INBOX"))
    assert "* 2 EXISTS" in out
    assert "[UIDVALIDITY " in out and "[UIDNEXT 3]" in out
    assert "[PERMANENTFLAGS ()]" in out  # EXAMINE: nothing may be changed
    assert flags_by_subject(imap_server)["one"] == set()  # examining set no flag


def test_fetch_by_uid_returns_the_message_and_marks_it_seen(imap_server: ImapEndpoint) -> None:
    seed(imap_server, [("one", "first body", ()), ("two", "second body", ())])
    out = ok(curl(imap_server, "INBOX;UID=2"))
    assert "Subject: two" in out and "second body" in out and "first body" not in out
    assert "\\Seen" in flags_by_subject(imap_server)["two"]  # a BODY[] fetch means "opened"
    assert "\\Seen" not in flags_by_subject(imap_server)["one"]


@pytest.mark.parametrize(
    ("section", "present", "absent"),
    [("TEXT", "second body", "Subject: two"), ("HEADER", "Subject: two", "second body"),
     ("HEADER.FIELDS%20(SUBJECT)", "Subject: two", "From:"), ("1", "second body", "Subject:")],
)
def test_fetch_a_section(imap_server: ImapEndpoint, section: str, present: str, absent: str) -> None:
    seed(imap_server, [("one", "first body", ()), ("two", "second body", ())])
    out = ok(curl(imap_server, f"INBOX;UID=2;SECTION={section}"))
    assert present in out and absent not in out


def test_fetch_of_a_missing_uid_fails(imap_server: ImapEndpoint) -> None:
    seed(imap_server, [("one", "first body", ())])
    result = curl(imap_server, "INBOX;UID=99")
    assert result.returncode != 0 and "first body" not in result.stdout


@pytest.mark.parametrize(
    ("query", "expected"),
    [("ALL", "* SEARCH 1 2 3"), ("SUBJECT%20two", "* SEARCH 2"), ("UNSEEN", "* SEARCH 1 3"),
     ("BODY%20needle", "* SEARCH 3"), ("SUBJECT%20nothing-like-this", "* SEARCH")],
)
def test_search(imap_server: ImapEndpoint, query: str, expected: str) -> None:
    seed(imap_server, [("one", "hay", ()), ("two", "hay", ("\\Seen",)), ("three", "a needle here", ())])
    out = ok(curl(imap_server, f"INBOX?{query}"))
    assert out.strip() == expected


def test_append_with_upload(imap_server: ImapEndpoint, tmp_path: Path) -> None:
    eml = tmp_path / "draft.eml"
    eml.write_bytes(make_message("uploaded", "sent with curl -T"))
    ok(curl(imap_server, "Sent", "-T", str(eml)))
    assert "uploaded" in flags_by_subject(imap_server, "Sent")
    out = ok(curl(imap_server, "Sent;UID=1"))
    assert "sent with curl -T" in out


def test_wrong_password_exits_67(imap_server: ImapEndpoint) -> None:
    result = curl(imap_server, "INBOX?ALL", password="not-" + imap_server.password)
    assert result.returncode == CURL_LOGIN_DENIED, result.stderr
