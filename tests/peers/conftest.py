"""Fixtures of the peer tests: `imap_server` gives each test a fresh account on Dovecot or on recall-lab."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from recall_lab.harness.dovecot import dovecot_binary

from .servers import SERVER_KINDS, ImapEndpoint, SharedDovecot, ThreadedRecallLabServer


def require_program(name: str) -> str:
    """The path of a peer program, or skip the test saying which one is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (scripts/install-peers.sh installs it)")
    return path


@pytest.fixture(scope="session")
def shared_dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedDovecot]:
    dovecot = SharedDovecot(tmp_path_factory.mktemp("dovecot"))
    yield dovecot
    dovecot.stop()


def open_endpoints(kind: str, shared: SharedDovecot, *localparts: str,
                   maildir: Path | None = None) -> Iterator[list[ImapEndpoint]]:
    """Fresh accounts on the named server; recall-lab's server lives exactly as long as the test (over a
    MemoryStore, or a MaildirStore in `maildir`)."""
    if kind == "dovecot":
        if dovecot_binary() is None:
            pytest.skip("dovecot not installed (apt-get install dovecot-imapd)")
        yield [shared.account(localpart) for localpart in localparts]
        return
    users = {f"{localpart}@corp.example": f"{localpart}-password" for localpart in localparts}
    server = ThreadedRecallLabServer(users, maildir).start()
    try:
        yield [ImapEndpoint("recall-lab", server.host, server.port, user, password)
               for user, password in users.items()]
    finally:
        server.stop()


@pytest.fixture(params=SERVER_KINDS)
def imap_server(request: pytest.FixtureRequest, shared_dovecot: SharedDovecot) -> Iterator[ImapEndpoint]:
    """One fresh account, on Dovecot (the reference) or on recall-lab's server: every peer test runs on both."""
    for endpoints in open_endpoints(request.param, shared_dovecot, "alice"):
        yield endpoints[0]
