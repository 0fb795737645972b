"""Client emulators of the lab: a cached desktop client, a static web view, the simulated user, the outcome.

Each is a real IMAP client over real sockets (aioimaplib); see docs/clients.md. Names are imported
lazily so that importing this package (e.g. from the pytest plugin) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DesktopClient": "recall_lab.harness.clients.desktop",
    "ClientEvent": "recall_lab.harness.clients.desktop",
    "LocalNotice": "recall_lab.harness.clients.desktop",
    "OfflinePeriod": "recall_lab.harness.clients.desktop",
    "WebClient": "recall_lab.harness.clients.web",
    "MessageGone": "recall_lab.harness.clients.web",
    "ListEntry": "recall_lab.harness.clients.web",
    "SimulatedUser": "recall_lab.harness.clients.user",
    "LogNormalDelay": "recall_lab.harness.clients.user",
    "ExponentialDelay": "recall_lab.harness.clients.user",
    "FixedDelay": "recall_lab.harness.clients.user",
    "NeverOpens": "recall_lab.harness.clients.user",
    "MoveRule": "recall_lab.harness.clients.user",
    "Preview": "recall_lab.harness.clients.preview",
    "ClientCopy": "recall_lab.harness.clients.outcome",
    "RecipientOutcome": "recall_lab.harness.clients.outcome",
    "ClientVerdict": "recall_lab.harness.clients.outcome",
    "judge": "recall_lab.harness.clients.outcome",
    "ImapClientError": "recall_lab.harness.clients.connection",
    "ImapCommandError": "recall_lab.harness.clients.connection",
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
    from recall_lab.harness.clients.connection import ImapClientError, ImapCommandError
    from recall_lab.harness.clients.desktop import ClientEvent, DesktopClient, LocalNotice, OfflinePeriod
    from recall_lab.harness.clients.outcome import ClientCopy, ClientVerdict, RecipientOutcome, judge
    from recall_lab.harness.clients.preview import Preview
    from recall_lab.harness.clients.user import (
        ExponentialDelay,
        FixedDelay,
        LogNormalDelay,
        MoveRule,
        NeverOpens,
        SimulatedUser,
    )
    from recall_lab.harness.clients.web import ListEntry, MessageGone, WebClient


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'recall_lab.harness.clients' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
