"""recall-lab: a real IMAP/SMTP lab that shows why recalling an email works, half works, or cannot work.

Everything installs under this one name (`recall_lab.harness`, `recall_lab.fake_servers`), so the lab never
shadows a package of its user's called `harness`. The public API is re-exported here and imported on first use
(the pytest plugin loads this package in every test session of an environment that has recall-lab; it must
stay light).

    >>> from recall_lab import Lab, RecallAgent     # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Lab": "recall_lab.harness.lab",
    "BlockingLab": "recall_lab.harness.lab",
    "LabStartError": "recall_lab.harness.lab",
    "RecallAgent": "recall_lab.harness.recall_agent",
    "SyncRecallAgent": "recall_lab.harness.recall_agent",
    "RecallAgentError": "recall_lab.harness.recall_agent",
    "DesktopClient": "recall_lab.harness.clients.desktop",
    "WebClient": "recall_lab.harness.clients.web",
    "SimulatedUser": "recall_lab.harness.clients.user",
    "MailLab": "recall_lab.harness.pytest_plugin",
    "MailboxWatch": "recall_lab.harness.pytest_plugin",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'recall_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
