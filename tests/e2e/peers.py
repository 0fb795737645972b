"""Real mail programs driven in batch: neomutt reads a message, curl fetches over imap://, swaks submits.

Why here and not shared with tests/peers: the e2e suite plays a user at a terminal against `recall-lab serve`,
so it needs only the one command line each program is run with; it must not break when another suite's
helpers change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} not installed")
    return path


def neomutt_read_first(tmp_path: Path, user: str, password: str, host: str, port: int) -> str:
    """Open the first message of `user`'s INBOX in neomutt (it sets \\Seen) and return what the pager got."""
    mutt = shutil.which("neomutt") or shutil.which("mutt")
    if mutt is None:
        pytest.skip("neomutt not installed (nor mutt)")
    script = need("script")
    rc, shown = tmp_path / "muttrc", tmp_path / "shown.txt"
    account = f"imap://{user.replace('@', '%40')}@{host}:{port}"
    rc.write_text("\n".join([
        "set ssl_force_tls=no", "set ssl_starttls=no",
        f'set imap_user="{user}"', f'set imap_pass="{password}"',
        f'set folder="{account}/"', f'set spoolfile="{account}/INBOX"',
        'set record=""', 'set postponed=""', 'set header_cache=""', 'set message_cachedir=""',
        f'set tmpdir="{tmp_path}"', f'set pager="cat > {shown}"',
        "set prompt_after=no", "set wait_key=no", "set quit=yes", "set move=no", "set mark_old=no", "",
    ]))
    env = {**os.environ, "HOME": str(tmp_path), "TERM": "xterm", "COLUMNS": "100", "LINES": "30"}
    result = subprocess.run([script, "-qec", f"{mutt} -n -F {rc} -e 'push <display-message><quit>'", "/dev/null"],
                            stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=30, cwd=tmp_path)
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]
    return shown.read_text(errors="replace")


def curl_imap(user: str, password: str, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    curl = need("curl")
    return subprocess.run([curl, "-s", "-S", "--max-time", "15", "-u", f"{user}:{password}", url, *extra],
                          capture_output=True, text=True, timeout=30)


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need("swaks"), "--timeout", "15", *args], capture_output=True, text=True, timeout=30)


def neomutt_send(tmp_path: Path, user: str, password: str, host: str, submission_port: int, to: str,
                 subject: str, body: str) -> None:
    """Send as `user` with neomutt in batch mode over the lab's submission port (SMTP AUTH)."""
    mutt = shutil.which("neomutt") or shutil.which("mutt")
    if mutt is None:
        pytest.skip("neomutt not installed (nor mutt)")
    rc, body_file = tmp_path / "muttrc-send", tmp_path / "body.txt"
    rc.write_text("\n".join([
        "set ssl_force_tls=no", "set ssl_starttls=no", f'set from="{user}"', 'set realname="Alice"',
        f'set smtp_url="smtp://{user.replace("@", "%40")}@{host}:{submission_port}/"',
        f'set smtp_pass="{password}"', 'set record=""', 'set copy=no', f'set tmpdir="{tmp_path}"', "",
    ]))
    body_file.write_text(body)
    env = {**os.environ, "HOME": str(tmp_path), "TERM": "xterm"}
    with body_file.open() as stdin:
        result = subprocess.run([mutt, "-n", "-F", str(rc), "-s", subject, to], stdin=stdin, capture_output=True,
                                text=True, env=env, timeout=30, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
