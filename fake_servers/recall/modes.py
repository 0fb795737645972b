"""The recall modes: the one place that names them (the server's `recall_mode` setting, the matrix's columns).

Why here, in the server layer: the mode is a setting of the organisation's server (fake_servers/recall/policy.py
decides what each one does); the harness measures the modes that recall something and titles its table columns
with them, so it imports these names instead of spelling them again.
"""

from __future__ import annotations

from typing import Literal

#: A mode that recalls something: the server deletes (cloud) or the recipients' desktop clients do (legacy).
ActiveMode = Literal["cloud", "legacy"]
#: What `policies.recall_mode` may say; "off" passes recalls through like any other mail.
RecallMode = Literal["cloud", "legacy", "off"]

ACTIVE_MODES: tuple[ActiveMode, ...] = ("cloud", "legacy")
MODES: tuple[RecallMode, ...] = (*ACTIVE_MODES, "off")

#: How reports name each mode (a column title of the measured table).
TITLES: dict[str, str] = {"cloud": "cloud recall", "legacy": "legacy recall"}
