"""Who keeps a domain's mailboxes and serves its IMAP: the lab's own store and server, or a private Dovecot.

Why a module of its own: the Lab builds every domain the same way (SMTP listeners, policies, relay) and only
this choice differs. With `backend = "dovecot"` the lab starts a throwaway Dovecot (harness/dovecot.py) with
LMTP and a master user, and the domain's store is a `DovecotStore` (fake_servers/store/dovecot.py) over it:
delivery goes in over LMTP, the policies act over IMAP as the master user, and the users' clients are sent to
Dovecot's IMAP port. Nothing of Dovecot's files is written behind its back. See docs/dovecot-backend.md.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recall_lab.fake_servers.domain import Endpoint
from recall_lab.fake_servers.store import MailStore, open_store
from recall_lab.fake_servers.store.dovecot import DovecotAccess, DovecotStore
from recall_lab.harness.config import DomainConfig
from recall_lab.harness.dovecot import DovecotError, DovecotServer, dovecot_binary

#: Dovecot's hidden namespace for what its clients expunge (lazy_expunge): the lab's Recoverable Items read it.
EXPUNGED = ".EXPUNGED/"


class BackendError(Exception):
    """A backend could not start (Dovecot missing or failing): one line, fit for the CLI."""


@dataclass
class Backend:
    """A domain's store, the IMAP endpoint when another server serves it, and how to stop what was started."""

    store: MailStore
    imap: Endpoint | None = None
    kind: str = "lab"
    dovecot: DovecotServer | None = None
    _cleanup: list[Callable[[], None]] = field(default_factory=list)

    async def close(self) -> None:
        """Close the store, then stop Dovecot (about a second: it is waited for in a thread, not on the loop)."""
        self.store.close()
        if self.dovecot is not None:
            await asyncio.to_thread(self.dovecot.stop)
        for step in self._cleanup:
            step()


def lmtp_available() -> bool:
    """True when Dovecot's LMTP server (Debian's dovecot-lmtpd) is installed beside dovecot."""
    return dovecot_binary() is not None and Path("/usr/lib/dovecot/lmtp").exists()


async def open_backend(dc: DomainConfig, *, host: str, mail_dir: Path | None,
                       password_of: Callable[[str], str | None], watch: bool = True,
                       tls_files: tuple[Path, Path] | None = None) -> Backend:
    """The backend `dc.backend` names. `mail_dir`: where the mail is kept across runs (the lab's
    `--store maildir:DIR` gives DIR/<domain>/...; None: in memory, or in Dovecot's private run dir).
    `password_of(user)`: the account's password (the domain's accounts), for Dovecot's user database.
    `watch`: publish other clients' changes as they happen (DovecotAccess.watch). `tls_files`: (certificate
    chain, key) PEM files: Dovecot then offers STARTTLS and refuses a login before it, as the lab's IMAP does."""
    if dc.backend == "lab":
        store = open_store(f"maildir:{mail_dir}") if mail_dir is not None else open_store("memory")
        return Backend(store)
    if dc.backend != "dovecot":
        raise BackendError(f"{dc.name}: unknown backend {dc.backend!r}")
    if dovecot_binary() is None:
        raise BackendError(f"{dc.name}: backend dovecot needs Dovecot (apt-get install dovecot-imapd dovecot-lmtpd)")
    if not lmtp_available():
        raise BackendError(f"{dc.name}: backend dovecot needs Dovecot's LMTP server (apt-get install dovecot-lmtpd)")
    conf_dir = Path(tempfile.mkdtemp(prefix=f"lab-{dc.name}-dovecot-"))
    server = DovecotServer(conf_dir, dict(dc.users), mail_root=mail_dir, host=host, lmtp=True, tls=tls_files,
                           plaintext_login=tls_files is None, lazy_expunge=EXPUNGED,
                           list_index=True)
    try:
        # started from the loop's own thread, not a worker thread: Dovecot is told to stop when the thread that
        # started it ends (harness/dovecot.py), and the loop's thread lives as long as the lab (~0.2 s blocked)
        server.start()
    except DovecotError as exc:
        shutil.rmtree(conf_dir, ignore_errors=True)
        raise BackendError(f"{dc.name}: Dovecot did not start: {str(exc).splitlines()[-1]}") from None

    def provision(user: str) -> None:
        if user not in server.users:  # an account added while the lab runs (or one only the store knows)
            server.add_user(user, password_of(user) or secrets.token_hex(16))

    access = DovecotAccess(host, server.port, server.lmtp_port, server.master_password, server.login_as,
                           provision=provision, watch=watch, expunged_prefix=EXPUNGED)
    backend = Backend(DovecotStore(access), Endpoint(host, server.port), "dovecot", server)
    backend._cleanup.append(lambda: shutil.rmtree(conf_dir, ignore_errors=True))
    return backend
