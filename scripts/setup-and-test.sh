#!/usr/bin/env bash
# Sets up a fresh Debian machine (the Debian peers, each feature the tests use verified, imaptest when
# ../shared/tools/imaptest is there, a virtualenv with recall-lab and its test extras) and runs
# the whole test suite on 2 workers. Run as root (or with sudo available). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-peers.sh
bash scripts/ensure-venv.sh test
# Playwright (from the test extra) must drive Debian's chromium; there is no browser download to fall back on.
.venv/bin/python scripts/check-browser.py
# Tests start `recall-lab` and `python` as subprocesses: they must find the virtualenv's.
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 "$@"
