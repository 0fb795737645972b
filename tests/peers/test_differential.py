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
from .differential_compare import differences, dump, normalised
from .differential_runner import SectionRun
from .differential_script import RECENT_RACES, SECTIONS
from .servers import ImapEndpoint, SharedDovecot

#: Sections where recall-lab knowingly differs from Dovecot and the RFC sides with Dovecot, still unfixed:
#: section -> reason (reported to the lead). Strict: the xfail turns into a failure once fixed.
KNOWN_DIFFERENCES: dict[str, str] = {}


@pytest.fixture
def servers(shared_dovecot: SharedDovecot, tmp_path: Path) -> Iterator[dict[str, ImapEndpoint]]:
    """Dovecot, and recall-lab over each store: the IMAP semantics must not depend on where mail is kept."""
    for dovecot in open_endpoints("dovecot", shared_dovecot, "alice"):
        for memory in open_endpoints("recall-lab", shared_dovecot, "alice"):
            for maildir in open_endpoints("recall-lab", shared_dovecot, "alice", maildir=tmp_path / "maildir"):
                yield {"dovecot": dovecot[0], "recall-lab": memory[0], "recall-lab/maildir": maildir[0]}


def _params() -> list:
    params = []
    for name in SECTIONS:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_DIFFERENCES[name])] if name in KNOWN_DIFFERENCES else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("section", _params())
def test_same_responses_as_dovecot(section: str, servers: dict[str, ImapEndpoint], tmp_path: Path) -> None:
    races = section in RECENT_RACES
    results = {}
    for kind, endpoint in servers.items():
        transcript = SectionRun(endpoint).run(SECTIONS[section])
        dump(tmp_path / f"{kind.replace('/', '-')}.txt", transcript)
        results[kind] = normalised(transcript, races)
    reference = results.pop("dovecot")
    report = [line for kind, ours in results.items() for line in differences(reference, ours, kind)]
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
