"""neomutt (or mutt) in batch mode opens a message: the body reaches the pager and \\Seen lands on the server.

Why a pty: (neo)mutt is a curses program and will not run without a terminal, so it runs under `script`.
The "pager" is `cat > FILE`: (neo)mutt hands the rendered message to it, which proves the body really was
read, and `prompt_after=no` stops it from waiting for a key afterwards. `<quit>` then syncs \\Seen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import require_program
from .mail_helpers import flags_by_subject, seed
from .servers import ImapEndpoint


def mutt_binary() -> str:
    for name in ("neomutt", "mutt"):
        if path := shutil.which(name):
            return path
    pytest.skip("neomutt not installed (nor mutt)")


def write_muttrc(path: Path, ep: ImapEndpoint, shown: Path) -> None:
    account = f"imap://{ep.user}@{ep.host}:{ep.port}"
    path.write_text(
        "\n".join([
            "set ssl_force_tls=no",
            "set ssl_starttls=no",
            f'set imap_user="{ep.user}"',
            f'set imap_pass="{ep.password}"',
            f'set folder="{account}/"',
            f'set spoolfile="{account}/INBOX"',
            'set record=""',
            'set postponed=""',
            'set header_cache=""',
            'set message_cachedir=""',
            f'set tmpdir="{path.parent}"',
            f'set pager="cat > {shown}"',
            "set prompt_after=no",
            "set wait_key=no",
            "set quit=yes",
            "set delete=yes",  # purge deleted messages on sync without asking
            "set sleep_time=0",  # no pause after informational messages
            "set move=no",
            "set mark_old=no",
            "set sort=date",
            "",
        ])
    )


def run_mutt(ep: ImapEndpoint, tmp_path: Path, keys: str) -> Path:
    """Run (neo)mutt once in a pty with `keys` pushed; the file its pager wrote (the shown message)."""
    mutt = mutt_binary()
    script = require_program("script")
    rc, shown = tmp_path / "muttrc", tmp_path / "shown.txt"
    write_muttrc(rc, ep, shown)
    command = f"{mutt} -n -F {rc} -e 'push {keys}'"
    env = {**os.environ, "HOME": str(tmp_path), "TERM": "xterm", "COLUMNS": "100", "LINES": "30"}
    result = subprocess.run(
        [script, "-qec", command, "/dev/null"],
        stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=20, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    return shown


def test_mutt_reads_a_message(imap_server: ImapEndpoint, tmp_path: Path) -> None:
    mutt_binary()
    seed(imap_server, [("hello from dave", "The quick brown fox reads recall-lab mail.", ())])
    assert "\\Seen" not in flags_by_subject(imap_server)["hello from dave"]

    shown = run_mutt(imap_server, tmp_path, "<display-message><quit>")
    text = shown.read_text(errors="replace")
    assert "The quick brown fox reads recall-lab mail." in text
    assert "hello from dave" in text
    assert "\\Seen" in flags_by_subject(imap_server)["hello from dave"]


def test_mutt_deletes_a_message(imap_server: ImapEndpoint, tmp_path: Path) -> None:
    """The user deletes the newest message and syncs: \\Deleted is stored and the message expunged."""
    mutt_binary()
    seed(imap_server, [("keep me", "old", ()), ("delete me", "new", ())])
    run_mutt(imap_server, tmp_path, "<last-entry><delete-message><sync-mailbox><quit>")
    assert set(flags_by_subject(imap_server)) == {"keep me"}
