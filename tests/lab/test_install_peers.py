"""scripts/install-peers.sh checks each feature the tests use, not merely that a package is installed.

Why: swaks installs without the Perl module its STARTTLS needs (a Recommends that --no-install-recommends
leaves out); the setup went green and a peer test failed later with "TLS not available". Here the real peers
pass the checks, and stand-ins that lack a feature (earlier on PATH than the real ones) stop the script with
one line per missing feature. Runs only where every peer package is already installed, so it never installs
anything itself.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-peers.sh"
PACKAGES = ("dovecot-core", "dovecot-imapd", "dovecot-lmtpd", "curl", "swaks", "libnet-ssleay-perl", "neomutt",
            "isync", "offlineimap3", "util-linux", "bsdutils")


def _installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return result.stdout == "install ok installed"


def _ready() -> str | None:
    if shutil.which("dpkg-query") is None:
        return "not a Debian machine"
    missing = [p for p in PACKAGES if not _installed(p)]
    if missing:
        return f"peer packages not installed ({', '.join(missing)}): the script would install them"
    if (ROOT.parent / "shared" / "tools" / "imaptest").is_dir() and not Path("/usr/local/bin/imaptest").exists():
        return "imaptest not built yet: the script would build it"
    return None


pytestmark = pytest.mark.skipif(_ready() is not None, reason=str(_ready()))


def run(path_prefix: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)


def stand_in(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_the_installed_peers_pass_every_check() -> None:
    result = run()
    assert result.returncode == 0, result.stderr
    assert "MISSING" not in result.stderr


def test_a_peer_without_a_feature_stops_the_setup_with_one_line_each(tmp_path: Path) -> None:
    stand_in(tmp_path, "swaks", '[ "$1" = --support ] && echo "*** TLS not available: requires Net::SSLeay"\n'
                                "exit 0")
    stand_in(tmp_path, "neomutt", 'echo "NeoMutt 20220429"; echo "  -imap +gnutls"')
    result = run(tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines == ["install-peers: MISSING swaks TLS (Net::SSLeay: libnet-ssleay-perl)",
                     "install-peers: MISSING neomutt IMAP support",
                     "install-peers: 2 feature(s) missing after installing; the setup stops here"], result.stderr
