"""Rewrite the README's table from the command stated next to it, or check that they agree.

Why a script: the README's table ("What the lab shows") must be what a reader gets when they run the command
printed above it, and the rows change whenever a scenario or a client model does. Copying a table by hand
drifts; this script runs the command and puts its output between the markers. tests/e2e/test_readme_table.py
runs the same command and fails when the README's rates or words differ.

The README holds, in this order: an indented line with the command (`    recall-lab demo --no-walk --markdown
-n 20 -s 1`), then BEGIN, the command's stdout, END. The command must print only the table and its footnotes on
stdout (`recall-lab demo --markdown` does).

    python scripts/readme_table.py            # run the command, rewrite the README's table
    python scripts/readme_table.py --check    # exit 1 and show a diff when the README is not the output
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN = "<!-- table: begin (scripts/readme_table.py writes this part; do not edit by hand) -->"
END = "<!-- table: end -->"
COMMAND = re.compile(r"^    (recall-lab [^\n]+?)\s*$", re.M)
#: The command runs no longer than this (the demo's table takes about 15 s on 2 cores).
TIMEOUT = 600.0


class ReadmeError(Exception):
    """The README lacks the markers or the command, or the command failed."""


def find_command(text: str) -> str:
    """The last indented `recall-lab ...` line before BEGIN."""
    at = text.find(BEGIN)
    if at < 0 or text.find(END, at) < 0:
        raise ReadmeError(f"README.md has no {BEGIN!r} ... {END!r} block")
    found = COMMAND.findall(text[:at])
    if not found:
        raise ReadmeError("README.md states no indented `recall-lab ...` command before the table")
    return str(found[-1])


def current_block(text: str) -> str:
    """What the README holds between the markers (without the marker lines)."""
    start = text.index(BEGIN) + len(BEGIN) + 1
    return text[start:text.index(END, start)]


def replace_block(text: str, output: str) -> str:
    """The README with `output` between the markers."""
    start = text.index(BEGIN) + len(BEGIN) + 1
    end = text.index(END, start)
    return text[:start] + output.rstrip("\n") + "\n" + text[end:]


def recall_lab() -> list[str]:
    """The recall-lab installed beside this Python, else the one on PATH."""
    beside = Path(sys.executable).with_name("recall-lab")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("recall-lab")
    if found:
        return [found]
    raise ReadmeError("recall-lab is not installed (pip install -e . in this checkout)")


def run_command(command: str) -> str:
    """The command's stdout, run as a user would (no colour, wide terminal)."""
    argv = shlex.split(command)
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", TERM="dumb")
    env.pop("FORCE_COLOR", None)
    done = subprocess.run([*recall_lab(), *argv[1:]], capture_output=True, text=True, timeout=TIMEOUT, env=env,
                          cwd=ROOT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise ReadmeError(f"`{command}` exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 with a diff when they differ")
    parser.add_argument("--readme", type=Path, default=README, help="the README to rewrite (default: this one)")
    args = parser.parse_args(argv)
    try:
        text = args.readme.read_text(encoding="utf-8")
        command = find_command(text)
        print(f"running: {command}", file=sys.stderr)
        output = run_command(command)
    except (OSError, ReadmeError, subprocess.TimeoutExpired) as exc:
        print(f"readme_table: {exc}", file=sys.stderr)
        return 2
    new = replace_block(text, output)
    if new == text:
        print("README table is the command's output", file=sys.stderr)
        return 0
    if args.check:
        sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), "README.md",
                                                   "command output"))
        return 1
    args.readme.write_text(new, encoding="utf-8")
    print(f"rewrote the table in {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
