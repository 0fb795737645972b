"""mbsync (isync 1.4) for the tests that sync a lab mailbox to a local Maildir: one config, one way to run it.

Used by the peer tests (tests/peers/test_mbsync.py) and the end-to-end journey (tests/e2e), so both drive mbsync
the same way; a change of isync's config dialect is made here once.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .conftest import require_program
from .servers import ImapEndpoint


def write_config(path: Path, ep: ImapEndpoint, local: Path) -> None:
    # isync 1.4 wants SSLType (not TLSType); AuthMechs LOGIN keeps it off SASL libraries.
    path.write_text(f"""IMAPAccount lab
Host {ep.host}
Port {ep.port}
User {ep.user}
Pass {ep.password}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account lab

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel lab
Far :remote:
Near :local:
Patterns INBOX
Create Both
Expunge Both
SyncState *
Sync All
""")


def run_mbsync(config: Path, cwd: Path, timeout: float = 20) -> str:
    """Run one sync. Why the backdating: isync waits out the current second when a Maildir directory was
    changed within it (so it cannot miss a same-second change); dating the directories 2 s back is the same
    as having waited, and saves that second on every run."""
    binary = require_program("mbsync")
    for directory in (cwd / "Mail").rglob("*"):
        if directory.is_dir():
            stat = directory.stat()
            os.utime(directory, (stat.st_atime - 2, stat.st_mtime - 2))
    result = subprocess.run([binary, "-c", str(config), "-a"], capture_output=True, text=True,
                            timeout=timeout, cwd=cwd, env={"HOME": str(cwd), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, f"mbsync failed ({result.returncode}): {result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr
