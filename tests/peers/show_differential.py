"""Print the differential test's transcripts, for whoever fixes a difference it found.

    python -m tests.peers.show_differential                 # every section: only the differing steps
    python -m tests.peers.show_differential fetch --all     # one section, every step, both sides
    python -m tests.peers.show_differential fetch --raw     # ... and the raw responses under each step

Starts a throwaway Dovecot and a recall-lab server (MemoryStore) of its own, like the test does.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .differential_compare import differences, normalised
from .differential_runner import SectionRun
from .differential_script import RECENT_RACES, SECTIONS
from .servers import SharedDovecot, ThreadedRecallLabServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.peers.show_differential")
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"default: all of {', '.join(SECTIONS)}")
    parser.add_argument("--all", action="store_true", help="show every step, not only the differing ones")
    parser.add_argument("--raw", action="store_true", help="also show the raw responses (implies --all)")
    args = parser.parse_args(argv)
    workdir = tempfile.TemporaryDirectory(prefix="show-differential-")
    dovecot = SharedDovecot(Path(workdir.name))
    found = 0
    try:
        for section in args.sections or list(SECTIONS):
            ep = dovecot.account("alice")
            ours = ThreadedRecallLabServer({"alice@corp.example": "alice-password"}).start()
            try:
                mine = ours.endpoint()
                reference = SectionRun(ep).run(SECTIONS[section])
                candidate = SectionRun(mine).run(SECTIONS[section])
            finally:
                ours.stop()
            races = section in RECENT_RACES
            ref, cand = normalised(reference, races), normalised(candidate, races)
            print(f"===== {section}")
            if not (args.all or args.raw):
                report = differences(ref, cand)
                found += len(report)
                print("\n".join(report) or "same")
                continue
            for (cmd, lines_ref), (_, lines_cand), ex_ref, ex_cand in zip(ref, cand, reference, candidate,
                                                                          strict=False):
                mark = "  " if lines_ref == lines_cand else "!!"
                print(f"{mark} {cmd}")
                for label, lines, raw in (("dovecot   ", lines_ref, ex_ref), ("recall-lab", lines_cand, ex_cand)):
                    for line in lines:
                        print(f"     {label} {line[:300]}")
                    if args.raw:
                        for response in raw.responses:
                            print(f"     {label} < {response[:300]!r}")
    finally:
        dovecot.stop()
        workdir.cleanup()
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
