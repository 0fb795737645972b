"""Comparing two runs of a differential section: normalise each transcript, list the differing steps."""

from __future__ import annotations

from pathlib import Path

from .differential_runner import Exchange
from .imap_normalise import Normaliser


def normalised(transcript: list[Exchange], ignore_recent: bool = False) -> list[tuple[str, list[str]]]:
    """Each step as (connection: command, its normalised response lines)."""
    norm = Normaliser(ignore_recent=ignore_recent)
    return [(f"{ex.conn}: {ex.command}", norm.step(ex.conn, ex.command.split(" ", 1)[-1], ex.responses))
            for ex in transcript]


def dump(path: Path, transcript: list[Exchange]) -> None:
    """The raw transcript as text, for reading after a failure."""
    with path.open("w") as out:
        for ex in transcript:
            out.write(f"{ex.conn}> {ex.command}\n")
            for response in ex.responses:
                out.write(f"{ex.conn}< {response.decode('utf-8', 'replace')[:2000]}\n")


def differences(reference: list, ours: list, label: str = "recall-lab") -> list[str]:
    """One readable block per step whose normalised lines differ (Dovecot's first, then `label`'s)."""
    report = []
    pad = " " * (len(label) + 4)
    for (cmd_ref, lines_ref), (_, lines_ours) in zip(reference, ours, strict=False):
        if lines_ref != lines_ours:
            report.append(f"--- {cmd_ref}\n  {'dovecot:':<{len(label) + 2}}" + f"\n{pad}".join(lines_ref)
                          + f"\n  {label}: " + f"\n{pad}".join(lines_ours))
    if len(reference) != len(ours):
        report.append(f"--- step count differs: dovecot {len(reference)}, {label} {len(ours)}")
    return report
