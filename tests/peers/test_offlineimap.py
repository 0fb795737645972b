"""offlineimap syncs an account to a local Maildir and back (metadata kept in the test's temp dir)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .conftest import require_program
from .mail_helpers import connect, flags_by_subject, make_message, seed
from .maildir_helpers import deliver, flags_of, messages, set_flags
from .servers import ImapEndpoint


def write_config(path: Path, ep: ImapEndpoint, local: Path, metadata: Path) -> None:
    path.write_text(f"""[general]
accounts = lab
metadata = {metadata}
ui = basic

[Account lab]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {local}

[Repository remote]
type = IMAP
remotehost = {ep.host}
remoteport = {ep.port}
remoteuser = {ep.user}
remotepass = {ep.password}
ssl = no
starttls = no
folderfilter = lambda name: name == "INBOX"
""")


def run_offlineimap(config: Path, home: Path) -> str:
    binary = require_program("offlineimap")
    result = subprocess.run([binary, "-c", str(config), "-o"], capture_output=True, text=True, timeout=20,
                            cwd=home, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "ERROR" not in output, f"offlineimap failed:\n{output}"
    return output


def test_offlineimap_sync(imap_server: ImapEndpoint, tmp_path: Path) -> None:
    require_program("offlineimap")
    seed(imap_server, [("alpha", "a", ()), ("bravo", "b", ("\\Seen",)), ("charlie", "c", ())])
    config, local = tmp_path / "offlineimaprc", tmp_path / "Mail"
    write_config(config, imap_server, local, tmp_path / "metadata")
    inbox = local / "INBOX"

    run_offlineimap(config, tmp_path)
    files = messages(inbox)
    assert set(files) == {"alpha", "bravo", "charlie"}
    assert flags_of(files["bravo"]) == {"\\Seen"} and flags_of(files["alpha"]) == set()

    # server side: flag alpha, expunge charlie
    with connect(imap_server) as client:
        client.select_folder("INBOX")
        client.add_flags(client.search(["SUBJECT", "alpha"]), ["\\Flagged"])
        client.add_flags(client.search(["SUBJECT", "charlie"]), ["\\Deleted"])
        client.expunge()
    # local side: answer bravo, and file a new message
    set_flags(files["bravo"], {"\\Answered", "\\Seen"})
    deliver(inbox, "1700000000.local1.lab", make_message("delta", "written locally"))

    run_offlineimap(config, tmp_path)
    files = messages(inbox)
    assert set(files) == {"alpha", "bravo", "delta"}
    assert flags_of(files["alpha"]) == {"\\Flagged"}
    server = flags_by_subject(imap_server)
    assert set(server) == {"alpha", "bravo", "delta"}
    assert {"\\Answered", "\\Seen"} <= server["bravo"]

    # a local deletion reaches the server
    files["alpha"].unlink()
    run_offlineimap(config, tmp_path)
    assert set(flags_by_subject(imap_server)) == {"bravo", "delta"}
    assert set(messages(inbox)) == {"bravo", "delta"}
