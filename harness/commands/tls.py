"""TLS contexts for the commands: the server side of `serve --tls-cert` and `serve --tls auto`, the client side
of `--starttls`.

Why here: `send` and `recall` trust the same CA file the same way, and every file problem must come out as one
line naming the file (a CliError), checked before any socket is opened, not as a connection failure later.
`--tls auto` makes a local CA and a server certificate (trustme) so that a user or a test trusts the lab in one
step: the CA file is written where the endpoints JSON says (`"tls": {"cafile": ...}`).
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from recall_lab.harness.cli import EXIT_USAGE, CliError


def client_context(cafile: Path | None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or only `cafile` (the lab's test CA) when given."""
    try:
        return ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except OSError as exc:
        raise CliError(f"cannot read CA file {cafile}: {exc.strerror or exc}", code=EXIT_USAGE) from None
    except ssl.SSLError as exc:
        raise CliError(f"cannot use CA file {cafile}: {exc.reason or exc}", code=EXIT_USAGE) from None


def server_context(cert: Path, key: Path | None) -> ssl.SSLContext:
    """The lab's server context from a PEM certificate chain and its key (or one PEM file holding both)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise CliError(f"cannot use certificate {cert}{f' with key {key}' if key else ''}: "
                           f"{exc.reason or exc}", code=2) from None
        raise CliError(f"cannot read {exc.filename or cert}: {exc.strerror or exc}", code=2) from None
    return context


@dataclass
class AutoTls:
    """What `serve --tls auto` made: the server context, the CA file to trust, and the directory they are in
    (`cleanup` removes it when the command made it)."""

    context: ssl.SSLContext
    cafile: Path
    directory: Path
    temporary: bool

    def cleanup(self) -> None:
        if self.temporary:
            shutil.rmtree(self.directory, ignore_errors=True)


def auto_context(names: Iterable[str], directory: Path | None = None) -> AutoTls:
    """A local CA and a server certificate for 127.0.0.1, localhost and `names` (the lab's domains), written
    to `directory` (made when missing; None: a temporary directory, removed by `cleanup`) as ca.pem (the CA
    to trust) and server.pem (the certificate chain and its key)."""
    try:
        import trustme
    except ImportError:
        raise CliError("--tls auto needs the trustme package: pip install trustme", code=2) from None
    temporary = directory is None
    try:
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="recall-lab-tls-"))
        else:
            directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="recall-lab local CA")
        cert = ca.issue_cert("127.0.0.1", "localhost", *sorted({n.lower() for n in names}))
        cafile, server = directory / "ca.pem", directory / "server.pem"
        ca.cert_pem.write_to_path(str(cafile))
        cert.private_key_and_cert_chain_pem.write_to_path(str(server))
        server.chmod(0o600)
    except OSError as exc:
        raise CliError(f"cannot write the TLS files to {exc.filename or directory}: {exc.strerror or exc}",
                       code=2) from None
    context = server_context(server, None)
    return AutoTls(context=context, cafile=cafile.resolve(), directory=directory, temporary=temporary)
