"""Differential test: one command script, run over raw sockets against Dovecot (the reference) and against
recall-lab's server; the normalised responses must be the same, step by step.

What may legitimately differ is erased by `imap_normalise` (its docstring lists each rule and why). Each
section of the script (`differential_script.SECTIONS`) is a test of its own, on a fresh account on each side.
On a mismatch the assertion shows every differing step, both sides, and the raw transcripts are written to
the test's tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import open_endpoints
from .differential_runner import Exchange, SectionRun
from .differential_script import RECENT_RACES, SECTIONS
from .imap_normalise import Normaliser
from .servers import ImapEndpoint, SharedDovecot

#: Sections where recall-lab knowingly differs from Dovecot and the RFC sides with Dovecot, still unfixed:
#: section -> reason (reported to the lead). Strict: the xfail turns into a failure once fixed.
KNOWN_DIFFERENCES: dict[str, str] = {}


def normalised(transcript: list[Exchange], ignore_recent: bool = False) -> list[tuple[str, list[str]]]:
    norm = Normaliser(ignore_recent=ignore_recent)
    return [(f"{ex.conn}: {ex.command}", norm.step(ex.conn, ex.command.split(" ", 1)[-1], ex.responses))
            for ex in transcript]


def dump(path: Path, transcript: list[Exchange]) -> None:
    with path.open("w") as out:
        for ex in transcript:
            out.write(f"{ex.conn}> {ex.command}\n")
            for response in ex.responses:
                out.write(f"{ex.conn}< {response.decode('utf-8', 'replace')[:2000]}\n")


def differences(reference: list, ours: list) -> list[str]:
    report = []
    for (cmd_ref, lines_ref), (_, lines_ours) in zip(reference, ours, strict=False):
        if lines_ref != lines_ours:
            report.append(f"--- {cmd_ref}\n  dovecot:    " + "\n              ".join(lines_ref)
                          + "\n  recall-lab: " + "\n              ".join(lines_ours))
    if len(reference) != len(ours):
        report.append(f"--- step count differs: dovecot {len(reference)}, recall-lab {len(ours)}")
    return report


@pytest.fixture
def both_servers(shared_dovecot: SharedDovecot) -> Iterator[tuple[ImapEndpoint, ImapEndpoint]]:
    for dovecot in open_endpoints("dovecot", shared_dovecot, "alice"):
        for ours in open_endpoints("recall-lab", shared_dovecot, "alice"):
            yield dovecot[0], ours[0]


def _params() -> list:
    params = []
    for name in SECTIONS:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_DIFFERENCES[name])] if name in KNOWN_DIFFERENCES else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("section", _params())
def test_same_responses_as_dovecot(section: str, both_servers: tuple[ImapEndpoint, ImapEndpoint],
                                   tmp_path: Path) -> None:
    dovecot, ours = both_servers
    steps = SECTIONS[section]
    reference = SectionRun(dovecot).run(steps)
    candidate = SectionRun(ours).run(steps)
    dump(tmp_path / "dovecot.txt", reference)
    dump(tmp_path / "recall-lab.txt", candidate)
    races = section in RECENT_RACES
    report = differences(normalised(reference, races), normalised(candidate, races))
    assert not report, f"recall-lab differs from Dovecot in section {section!r} " \
                       f"(raw transcripts in {tmp_path}):\n" + "\n".join(report)


#: The sections whose raw responses vary from run to run on one server (UIDVALIDITY, MODSEQ, COPYUID, pushes
#: during IDLE, sessions racing for \\Recent): the control below runs them twice on Dovecot.
CONTROL_SECTIONS = ("list-and-mailboxes", "copy-move-expunge", "other-session", "condstore-qresync")


@pytest.mark.parametrize("section", CONTROL_SECTIONS)
def test_dovecot_agrees_with_itself(section: str, shared_dovecot: SharedDovecot) -> None:
    """The control: two fresh accounts on the same Dovecot must normalise alike (different UIDVALIDITYs,
    MODSEQs and timings included), so a difference above is recall-lab's, not the normaliser's."""
    for first in open_endpoints("dovecot", shared_dovecot, "alice"):
        for second in open_endpoints("dovecot", shared_dovecot, "alice"):
            races = section in RECENT_RACES
            one = normalised(SectionRun(first[0]).run(SECTIONS[section]), races)
            two = normalised(SectionRun(second[0]).run(SECTIONS[section]), races)
            assert not differences(one, two)
