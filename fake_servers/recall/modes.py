"""The recall modes: the one place that names them (the server's `recall_mode` setting, the matrix's columns).

Why here, in the server layer: the mode is a setting of the organisation's server (fake_servers/recall/policy.py
decides what each one does); the harness measures the modes that recall something and titles its table columns
with them, so it imports these names instead of spelling them again.

What each mode stands for (docs/recall-sources.md sections 1 and 2):
- "cloud": Exchange Online's cloud-based recall (Set-OrganizationConfig -MessageRecallEnabled $true, the default).
- "legacy", also spelled "classic": the classic recall done by the recipient's Outlook. This is what Exchange
  falls back to when cloud recall is turned off (-MessageRecallEnabled $false "reverts to the old recall
  experience"), so an Exchange organisation without cloud recall is `recall_mode = "classic"`.
- "off": a server that knows nothing of recalls (not Exchange): a recall passes through as ordinary mail and the
  server does not vouch for it, so no client acts on it.
"""

from __future__ import annotations

from typing import Literal

#: A mode that recalls something: the server deletes (cloud) or the recipients' desktop clients do (legacy).
ActiveMode = Literal["cloud", "legacy"]
#: What `policies.recall_mode` may say, after `normalise_mode`; "off" passes recalls through like any other mail.
RecallMode = Literal["cloud", "legacy", "off"]

ACTIVE_MODES: tuple[ActiveMode, ...] = ("cloud", "legacy")
MODES: tuple[RecallMode, ...] = (*ACTIVE_MODES, "off")
#: Other names accepted for a mode.
ALIASES: dict[str, RecallMode] = {"classic": "legacy"}

#: How reports name each mode (a column title of the measured table).
TITLES: dict[str, str] = {"cloud": "cloud recall", "legacy": "legacy recall"}


def normalise_mode(value: object) -> RecallMode:
    """The mode a `recall_mode` setting names ("classic" is "legacy"); ValueError for anything else."""
    name = str(value).strip().lower()
    name = ALIASES.get(name, name)
    for mode in MODES:
        if mode == name:
            return mode
    accepted = ", ".join((*MODES, *ALIASES))
    raise ValueError(f"policies.recall_mode must be one of {accepted}, not {value!r}")
