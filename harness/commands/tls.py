"""TLS contexts for the commands: the server side of `serve --tls-cert`, the client side of `--starttls`.

Why here: `send` and `recall` trust the same CA file the same way, and every file problem must come out as one
line naming the file (a CliError), checked before any socket is opened, not as a connection failure later.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from recall_lab.harness.cli import CliError


def client_context(cafile: Path | None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or only `cafile` (the lab's test CA) when given."""
    try:
        return ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except OSError as exc:
        raise CliError(f"cannot read CA file {cafile}: {exc.strerror or exc}") from None
    except ssl.SSLError as exc:
        raise CliError(f"cannot use CA file {cafile}: {exc.reason or exc}") from None


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
