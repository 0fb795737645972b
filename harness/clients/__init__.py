"""Client emulators of the lab: a cached desktop client, a static web view, the simulated user, the outcome.

Each is a real IMAP client over real sockets (aioimaplib); see docs/clients.md. Names are imported
lazily so that importing this package (e.g. from the pytest plugin) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DesktopClient": "harness.clients.desktop",
    "ClientEvent": "harness.clients.desktop",
    "LocalNotice": "harness.clients.desktop",
    "OfflinePeriod": "harness.clients.desktop",
    "WebClient": "harness.clients.web",
    "MessageGone": "harness.clients.web",
    "ListEntry": "harness.clients.web",
    "SimulatedUser": "harness.clients.user",
    "LogNormalDelay": "harness.clients.user",
    "ExponentialDelay": "harness.clients.user",
    "FixedDelay": "harness.clients.user",
    "NeverOpens": "harness.clients.user",
    "MoveRule": "harness.clients.user",
    "Preview": "harness.clients.preview",
    "ClientCopy": "harness.clients.outcome",
    "RecipientOutcome": "harness.clients.outcome",
    "ClientVerdict": "harness.clients.outcome",
    "judge": "harness.clients.outcome",
    "ImapClientError": "harness.clients.connection",
    "ImapCommandError": "harness.clients.connection",
}

__all__ = [
    "ClientCopy",
    "ClientEvent",
    "ClientVerdict",
    "DesktopClient",
    "ExponentialDelay",
    "FixedDelay",
    "ImapClientError",
    "ImapCommandError",
    "ListEntry",
    "LocalNotice",
    "LogNormalDelay",
    "MessageGone",
    "MoveRule",
    "NeverOpens",
    "OfflinePeriod",
    "Preview",
    "RecipientOutcome",
    "SimulatedUser",
    "WebClient",
    "judge",
]

if TYPE_CHECKING:
    from harness.clients.connection import ImapClientError, ImapCommandError
    from harness.clients.desktop import ClientEvent, DesktopClient, LocalNotice, OfflinePeriod
    from harness.clients.outcome import ClientCopy, ClientVerdict, RecipientOutcome, judge
    from harness.clients.preview import Preview
    from harness.clients.user import (
        ExponentialDelay,
        FixedDelay,
        LogNormalDelay,
        MoveRule,
        NeverOpens,
        SimulatedUser,
    )
    from harness.clients.web import ListEntry, MessageGone, WebClient


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.clients' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
