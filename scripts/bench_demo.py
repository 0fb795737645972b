"""How long `recall-lab demo` takes, as a user waits for it: wall time of whole runs in separate processes.

Why a benchmark and not a timed test: the demo's time depends on the machine and its load; a test that fails
when a CI box is busy reports no bug. This script keeps the budget (the README's first command should finish
in under 30 s on a 2-core machine) and says plainly whether the runs met it.

Why processes: the time a user waits includes Python's start-up and imports, and the demo's own worker
processes; only a fresh process sees all of it.

`--slow-own-name SECONDS` runs each demo with every name lookup (socket.getfqdn, gethostbyaddr, getaddrinfo of
a name, ...) delayed by that long, as on a machine whose own name is not in /etc/hosts and whose DNS does not
answer: the lab makes no lookup, so the time should not change (tests/lab/own_name_shim does the delaying and
counts the lookups). `--source DIR` runs the demo from another checkout (e.g. an older commit exported with
`git archive`) with this virtualenv, to compare before and after a change.

    python scripts/bench_demo.py                         # 3 runs of `recall-lab demo`
    python scripts/bench_demo.py --runs 1 --slow-own-name 1
    python scripts/bench_demo.py --source /tmp/old -- --trials 5   # arguments after -- go to the demo
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIM = ROOT / "tests" / "lab" / "own_name_shim"
BUDGET = 30.0


def demo_command(source: Path) -> list[str]:
    """The demo through this interpreter, importing the lab from `source` (first on sys.path)."""
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'recall-lab'; "
            "from recall_lab.harness.cli import main; main()")
    return [sys.executable, "-c", code, str(source), "demo"]


def run_once(source: Path, demo_args: list[str], slow: float | None, log: Path) -> tuple[float, int, int]:
    """One demo: (wall seconds, exit status, name lookups made)."""
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", TERM="dumb")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    if slow is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(SHIM), env["PYTHONPATH"]])
        env.update(OWN_NAME_SHIM=f"sleep:{slow}", OWN_NAME_LOG=str(log))
    log.unlink(missing_ok=True)
    started = time.perf_counter()
    result = subprocess.run([*demo_command(source), *demo_args], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=source)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        print(f"  demo exited {result.returncode}: {tail[0]}", file=sys.stderr)
    lookups = len(log.read_text().splitlines()) if log.exists() else 0
    return elapsed, result.returncode, lookups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="demo runs (default 3)")
    parser.add_argument("--slow-own-name", type=float, metavar="SECONDS",
                        help="delay every name lookup by SECONDS (a host whose own name does not resolve)")
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout to run (default: this one)")
    parser.add_argument("--budget", type=float, default=BUDGET, help=f"seconds (default {BUDGET:g})")
    parser.add_argument("demo_args", nargs="*", help="arguments for `recall-lab demo` (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    source = args.source.resolve()
    condition = "lookups normal" if args.slow_own_name is None else f"each lookup +{args.slow_own_name:g} s"
    print(f"recall-lab demo {' '.join(args.demo_args)}".rstrip() + f"  from {source}  ({condition})")
    times: list[float] = []
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            elapsed, code, lookups = run_once(source, args.demo_args, args.slow_own_name, Path(tmp) / "lookups")
            times.append(elapsed)
            failed += code != 0
            seen = "" if args.slow_own_name is None else f", {lookups} name lookups"
            print(f"  run {i + 1}: {elapsed:6.2f} s (exit {code}{seen})")
    median = statistics.median(times)
    print(f"wall time: min {min(times):.2f} s, median {median:.2f} s, max {max(times):.2f} s; "
          f"budget {args.budget:g} s: {'met' if median <= args.budget else 'EXCEEDED'}")
    return 1 if failed or median > args.budget else 0


if __name__ == "__main__":
    sys.exit(main())
