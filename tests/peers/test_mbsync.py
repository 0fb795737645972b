"""isync's mbsync syncs a mailbox to a local Maildir and back; flag changes and deletions go both ways."""

from __future__ import annotations

from pathlib import Path

from .conftest import require_program
from .mail_helpers import connect, flags_by_subject, make_message, seed
from .maildir_helpers import deliver, flags_of, messages, set_flags
from .mbsync_helpers import run_mbsync, write_config
from .servers import ImapEndpoint


def expunge_subject(ep: ImapEndpoint, subject: str) -> None:
    with connect(ep) as client:
        client.select_folder("INBOX")
        uids = client.search(["SUBJECT", subject])
        assert len(uids) == 1
        client.add_flags(uids, ["\\Deleted"])
        client.expunge()


def test_mbsync_round_trip(imap_server: ImapEndpoint, tmp_path: Path) -> None:
    require_program("mbsync")
    seed(imap_server, [("alpha", "a", ()), ("bravo", "b", ("\\Seen",)), ("charlie", "c", ()),
                       ("delta", "d", ())])
    local = tmp_path / "Mail"
    local.mkdir()
    config = tmp_path / "mbsyncrc"
    write_config(config, imap_server, local)
    inbox = local / "INBOX"

    # 1. server -> local: everything arrives with its flags
    run_mbsync(config, tmp_path)
    files = messages(inbox)
    assert set(files) == {"alpha", "bravo", "charlie", "delta"}
    assert flags_of(files["bravo"]) == {"\\Seen"} and flags_of(files["alpha"]) == set()

    # 2. server-side change: flag alpha, expunge charlie -> both reach the local Maildir
    with connect(imap_server) as client:
        client.select_folder("INBOX")
        client.add_flags(client.search(["SUBJECT", "alpha"]), ["\\Flagged"])
    expunge_subject(imap_server, "charlie")
    run_mbsync(config, tmp_path)
    files = messages(inbox)
    assert set(files) == {"alpha", "bravo", "delta"}
    assert flags_of(files["alpha"]) == {"\\Flagged"}

    # 3. local change: read delta, delete bravo, file a new message -> all three reach the server
    set_flags(files["delta"], {"\\Seen"})
    files["bravo"].unlink()
    deliver(inbox, "1700000000.local1.lab", make_message("echo", "written locally"))
    run_mbsync(config, tmp_path)
    server = flags_by_subject(imap_server)
    assert set(server) == {"alpha", "delta", "echo"}
    assert "\\Seen" in server["delta"] and "\\Flagged" in server["alpha"]

    # 4. a further sync is a no-op: both sides agree
    run_mbsync(config, tmp_path)
    assert set(messages(inbox)) == set(flags_by_subject(imap_server)) == {"alpha", "delta", "echo"}
