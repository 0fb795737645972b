"""STARTTLS with real clients: curl and mbsync upgrade the connection, check the server's certificate (a
trustme CA) and only then log in; a server that requires TLS refuses a plain-text login.

Both servers are configured alike: STARTTLS offered, LOGIN/AUTHENTICATE disabled until TLS (LOGINDISABLED).
Dovecot counts a connection as secure when the client's address is the server's own, so the plain-text
attempt connects from 127.0.0.2 (still loopback) to 127.0.0.1.
"""

from __future__ import annotations

import ssl
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from recall_lab.harness.dovecot import dovecot_binary

from .conftest import require_program
from .mail_helpers import make_message
from .maildir_helpers import messages
from .servers import SERVER_KINDS, ImapEndpoint, SharedDovecot, ThreadedRecallLabServer

CURL_LOGIN_DENIED = 67
CURL_PEER_FAILED_VERIFICATION = 60


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost", common_name="127.0.0.1")  # isync 1.4 wants a CN
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    for n, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(str(files.cert), append=n > 0)
    leaf.private_key_pem.write_to_path(str(files.key))
    return files


@pytest.fixture(scope="module")
def tls_dovecot(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[SharedDovecot]:
    dovecot = SharedDovecot(tmp_path_factory.mktemp("dovecot-tls"), tls=(tls_files.cert, tls_files.key),
                            plaintext_login=False)
    yield dovecot
    dovecot.stop()


@pytest.fixture(params=SERVER_KINDS)
def tls_server(request: pytest.FixtureRequest, tls_files: TlsFiles, tls_dovecot: SharedDovecot
               ) -> Iterator[ImapEndpoint]:
    if request.param == "dovecot":
        if dovecot_binary() is None:
            pytest.skip("dovecot not installed (apt-get install dovecot-imapd)")
        yield tls_dovecot.account("alice")
        return
    user, password = "alice@corp.example", "alice-password"
    server = ThreadedRecallLabServer({user: password}, ssl_context=tls_files.server_context(),
                                     login_disabled_without_tls=True).start()
    try:
        yield ImapEndpoint("recall-lab", server.host, server.port, user, password)
    finally:
        server.stop()


def curl(ep: ImapEndpoint, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_program("curl"), "--silent", "--show-error", "--max-time", "15",
         "-u", f"{ep.user}:{ep.password}", *args],
        capture_output=True, text=True, timeout=20,
    )


def test_curl_starttls_with_a_verified_certificate(tls_server: ImapEndpoint,
                                                   tls_files: TlsFiles, tmp_path: Path) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_message("over tls", "sent after STARTTLS"))
    tls = ["--ssl-reqd", "--cacert", str(tls_files.ca)]
    result = curl(tls_server, *tls, "-T", str(eml), f"{tls_server.url}/INBOX")
    assert result.returncode == 0, result.stderr
    result = curl(tls_server, *tls, f"{tls_server.url}/INBOX;UID=1")
    assert result.returncode == 0 and "sent after STARTTLS" in result.stdout, result.stderr


def test_many_clients_start_tls_at_once(tls_server: ImapEndpoint, tls_files: TlsFiles) -> None:
    """32 STARTTLS logins, 8 at a time: a server must not lose what a client sends at once, whether right after
    "OK Begin TLS" or right after the handshake (races that a single, unhurried client never shows)."""

    def attempt(_: int) -> int:
        return subprocess.run(
            [require_program("curl"), "--silent", "--show-error", "--max-time", "3", "--ssl-reqd",
             "--cacert", str(tls_files.ca), "-u", f"{tls_server.user}:{tls_server.password}",
             f"{tls_server.url}/"],
            capture_output=True, timeout=10,
        ).returncode

    with ThreadPoolExecutor(8) as pool:
        codes = Counter(pool.map(attempt, range(32)))
    assert codes == {0: 32}, f"curl exit codes (28 = hung): {dict(codes)}"


def test_curl_refuses_an_unknown_certificate(tls_server: ImapEndpoint) -> None:
    result = curl(tls_server, "--ssl-reqd", f"{tls_server.url}/")  # the system CAs do not know trustme's
    assert result.returncode == CURL_PEER_FAILED_VERIFICATION, result.stderr


def test_no_plain_text_login_before_tls(tls_server: ImapEndpoint) -> None:
    result = curl(tls_server, "--interface", "127.0.0.2", f"{tls_server.url}/")
    assert result.returncode == CURL_LOGIN_DENIED, result.stderr


def test_mbsync_over_starttls(tls_server: ImapEndpoint, tls_files: TlsFiles,
                              tmp_path: Path) -> None:
    mbsync = require_program("mbsync")
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_message("synced over tls", "x"))
    upload = curl(tls_server, "--ssl-reqd", "--cacert", str(tls_files.ca), "-T", str(eml),
                  f"{tls_server.url}/INBOX")
    assert upload.returncode == 0, upload.stderr
    local = tmp_path / "Mail"
    local.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(f"""IMAPAccount lab
Host {tls_server.host}
Port {tls_server.port}
User {tls_server.user}
Pass {tls_server.password}
SSLType STARTTLS
CertificateFile {tls_files.ca}
AuthMechs LOGIN

IMAPStore remote
Account lab

MaildirStore local
Path {local}/
Inbox {local}/INBOX

Channel lab
Far :remote:
Near :local:
Patterns INBOX
Create Near
SyncState *
Sync Pull
""")
    result = subprocess.run([mbsync, "-c", str(config), "-a"], capture_output=True, text=True, timeout=20,
                            cwd=tmp_path, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(messages(local / "INBOX")) == {"synced over tls"}
